#include "services/http/models.h"

#include "services/http/auth.h"
#include "services/http/json_fields.h"

namespace tessera::services::http {
namespace {

Json ModelObject(const std::string& id, int64_t created_us, const std::string& tenant, int64_t version, bool live) {
  return Json{{"id", id},
              {"object", "model"},
              {"created", created_us / 1000000},
              {"owned_by", tenant},
              {"tessera", {{"tenant", tenant}, {"version", version}, {"live", live}}}};
}

absl::Status AppendTenantModels(const ServiceEnv& env, const storage::Tenant& t, Json* data) {
  absl::StatusOr<int64_t> live = env.registry->GetLive(t.tenant_id);
  if (!live.ok()) return live.status();
  absl::StatusOr<std::vector<storage::ExpertVersion>> versions = env.registry->ListVersions(t.tenant_id);
  if (!versions.ok()) return versions.status();
  data->push_back(ModelObject(t.tenant_id, t.created_at_us, t.tenant_id, *live, true));
  data->push_back(ModelObject(FormatModelName(t.tenant_id, 0), t.created_at_us, t.tenant_id, 0, *live == 0));
  for (const storage::ExpertVersion& v : *versions) {
    data->push_back(ModelObject(FormatModelName(t.tenant_id, v.version), v.created_at_us, t.tenant_id, v.version,
                                v.version == *live));
  }
  return absl::OkStatus();
}

absl::Status ListModels(Call& call) {
  absl::StatusOr<std::vector<storage::Tenant>> visible = VisibleTenants(call.env, call.principal);
  if (!visible.ok()) return visible.status();
  const std::vector<storage::Tenant>& tenants = *visible;
  Json data = Json::array();
  for (const storage::Tenant& t : tenants) {
    if (absl::Status s = AppendTenantModels(call.env, t, &data); !s.ok()) return s;
  }
  SendJson(call.res, Json{{"object", "list"}, {"data", std::move(data)}});
  return absl::OkStatus();
}

absl::Status GetModel(Call& call) {
  std::string id = call.req.matches[1];
  absl::StatusOr<ModelRef> ref = ResolveModel(call.env, call.principal, id);
  if (!ref.ok()) return ref.status();
  absl::StatusOr<storage::Tenant> t = call.env.registry->GetTenant(ref->tenant);
  if (!t.ok()) return t.status();
  int64_t created = t->created_at_us;
  if (!ref->live && ref->version > 0) {
    absl::StatusOr<storage::ExpertVersion> v = call.env.registry->GetVersion(ref->tenant, ref->version);
    if (!v.ok()) return v.status();
    created = v->created_at_us;
  }
  absl::StatusOr<int64_t> live = call.env.registry->GetLive(ref->tenant);
  if (!live.ok()) return live.status();
  SendJson(call.res, ModelObject(id, created, ref->tenant, ref->version, ref->version == *live));
  return absl::OkStatus();
}

}  // namespace

void RegisterModels(Router& router) {
  router.Get("/v1/models", "/v1/models", kAnyScope, ListModels);
  router.Get(R"(/v1/models/([^/]+))", "/v1/models/{model}", kAnyScope, GetModel);
}

}  // namespace tessera::services::http
