#include "services/http/console_api.h"
#include "services/replicas.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/convert.h"
#include "services/fine_tuning_service.h"
#include "services/http/auth.h"
#include "services/http/errors.h"
#include "services/http/fine_tuning.h"
#include "services/http/json_fields.h"
#include "services/job_spec.h"
#include "services/live_control.h"

namespace tessera::services::http {
namespace {

constexpr int kMaxWaitSeconds = 20;

// The {t} of the URL, checked against the key (403 for a tenant key naming another tenant).
absl::StatusOr<std::string> UrlTenant(const Call& call) {
  std::string tenant = call.req.matches[1];
  if (absl::Status s = Authenticator::CheckTenantScope(call.principal, tenant); !s.ok()) return s;
  if (absl::StatusOr<storage::Tenant> t = call.env.registry->GetTenant(tenant); !t.ok()) return t.status();
  return tenant;
}

absl::Status RequireAdmin(const Call& call) {
  if (call.principal.role != storage::Role::kAdmin) {
    return absl::PermissionDeniedError("this action requires an ADMIN API key");
  }
  return absl::OkStatus();
}

Json SlotsJson(const std::string& slots_json) {
  Json out = Json::array();
  absl::StatusOr<std::vector<SlotId>> slots = SlotsFromJson(slots_json);
  if (!slots.ok()) return out;
  for (const SlotId& s : *slots) out.push_back(Json::array({s.layer, s.expert}));
  return out;
}

Json Optional(const std::optional<double>& v) { return v ? Json(*v) : Json(nullptr); }

absl::Status Me(Call& call) {
  const storage::Principal& p = call.principal;
  SendJson(call.res, Json{{"role", p.role == storage::Role::kAdmin ? "admin" : "tenant"},
                          {"tenant", p.tenant_id.empty() ? Json(nullptr) : Json(p.tenant_id)},
                          {"key_id", p.key_id}});
  return absl::OkStatus();
}

absl::Status Tenants(Call& call) {
  absl::StatusOr<std::vector<storage::Tenant>> visible = VisibleTenants(call.env, call.principal);
  if (!visible.ok()) return visible.status();
  const std::vector<storage::Tenant>& tenants = *visible;
  Json out = Json::array();
  for (const storage::Tenant& t : tenants) {
    absl::StatusOr<int64_t> live = call.env.registry->GetLive(t.tenant_id);
    if (!live.ok()) return live.status();
    absl::StatusOr<std::vector<storage::ExpertVersion>> versions = call.env.registry->ListVersions(t.tenant_id);
    if (!versions.ok()) return versions.status();
    absl::StatusOr<std::vector<storage::ApiKey>> keys = call.env.registry->ListApiKeys(t.tenant_id);
    if (!keys.ok()) return keys.status();
    Json kj = Json::array();
    for (const storage::ApiKey& k : *keys) {
      kj.push_back({{"key_id", k.key_id}, {"role", storage::RoleName(k.role)}, {"created_at", k.created_at_us / 1000000},
                    {"revoked", k.revoked_at_us != 0}});
    }
    out.push_back({{"tenant_id", t.tenant_id}, {"display_name", t.display_name}, {"created_at", t.created_at_us / 1000000},
                   {"live_version", *live}, {"versions", versions->size()}, {"keys", kj}});
  }
  SendJson(call.res, Json{{"tenants", out}});
  return absl::OkStatus();
}

absl::Status Tenant(Call& call) {
  absl::StatusOr<std::string> tenant = UrlTenant(call);
  if (!tenant.ok()) return tenant.status();
  absl::StatusOr<int64_t> live = call.env.registry->GetLive(*tenant);
  if (!live.ok()) return live.status();
  absl::StatusOr<std::vector<storage::ExpertVersion>> versions = call.env.registry->ListVersions(*tenant);
  if (!versions.ok()) return versions.status();
  absl::StatusOr<std::vector<storage::Change>> history = call.env.registry->ListLiveHistory(*tenant, 50);
  if (!history.ok()) return history.status();
  Json vj = Json::array();
  for (const storage::ExpertVersion& v : *versions) {
    vj.push_back({{"version", v.version}, {"model", absl::StrCat(*tenant, ":", v.version)},
                  {"parent_version", v.parent_version}, {"job_id", v.job_id}, {"val_loss", Optional(v.val_loss)},
                  {"base_val_loss", Optional(v.base_val_loss)}, {"slots", SlotsJson(v.slots_json)},
                  {"size_bytes", v.size_bytes}, {"created_at", v.created_at_us / 1000000}, {"live", v.version == *live}});
  }
  Json hj = Json::array();
  for (const storage::Change& c : *history) {
    hj.push_back({{"kind", storage::ChangeKindName(c.kind)}, {"from", c.previous_live}, {"to", c.live_version},
                  {"actor", c.actor}, {"at", c.created_at_us / 1000000}});
  }
  SendJson(call.res, Json{{"tenant_id", *tenant}, {"live_version", *live}, {"versions", vj}, {"history", hj}});
  return absl::OkStatus();
}

absl::Status Move(Call& call, bool promote) {
  absl::StatusOr<std::string> tenant = UrlTenant(call);
  if (!tenant.ok()) return tenant.status();
  if (absl::Status s = RequireAdmin(call); !s.ok()) return s;
  absl::StatusOr<Json> body = ParseObject(call.req.body.empty() ? "{}" : call.req.body);
  if (!body.ok()) return body.status();
  absl::StatusOr<std::optional<int64_t>> version = GetInt(*body, promote ? "version" : "to_version");
  if (!version.ok()) return version.status();
  if (promote && !*version) return FieldError("version", "is required");
  if (*version && **version < 0) return FieldError(promote ? "version" : "to_version", "must be >= 0");
  if (call.env.live == nullptr) return absl::UnavailableError("live control is not available");
  absl::StatusOr<storage::LiveMove> move = promote ? call.env.live->Promote(*tenant, **version, Actor(call.principal))
                                                   : call.env.live->Rollback(*tenant, *version, Actor(call.principal));
  if (!move.ok()) return move.status();
  ReplicaWait replicas = AwaitReplicas(call.env, *move);
  SendJson(call.res, Json{{"tenant_id", *tenant}, {"previous_live", move->previous_live},
                          {"live_version", move->live_version}, {"changed", move->changed},
                          {"replicas_applied", replicas.applied}, {"lagging_replicas", replicas.lagging}});
  return absl::OkStatus();
}

absl::Status Promote(Call& call) { return Move(call, true); }
absl::Status Rollback(Call& call) { return Move(call, false); }

absl::Status Jobs(Call& call) {
  absl::StatusOr<std::string> tenant = UrlTenant(call);
  if (!tenant.ok()) return tenant.status();
  v1::ListJobsResponse page;
  if (absl::Status s = ListJobsFor(call.env, *tenant, 100, "", &page); !s.ok()) return s;
  Json out = Json::array();
  for (const v1::Job& j : page.jobs()) out.push_back(JobObject(j));
  SendJson(call.res, Json{{"jobs", out}});
  return absl::OkStatus();
}

absl::Status Curve(Call& call) {
  absl::StatusOr<std::string> tenant = UrlTenant(call);
  if (!tenant.ok()) return tenant.status();
  std::string job_id = call.req.matches[2];
  int64_t after = 0;
  int wait = 0;
  if (call.req.has_param("after") && (!absl::SimpleAtoi(call.req.get_param_value("after"), &after) || after < 0)) {
    return FieldError("after", "must be an integer >= 0");
  }
  if (call.req.has_param("wait") && (!absl::SimpleAtoi(call.req.get_param_value("wait"), &wait) || wait < 0)) {
    return FieldError("wait", "must be an integer >= 0");
  }
  wait = std::min(wait, kMaxWaitSeconds);
  absl::StatusOr<storage::Job> job = call.env.registry->GetJob(*tenant, job_id);
  if (!job.ok()) return job.status();
  absl::StatusOr<std::vector<storage::JobEvent>> events = call.env.registry->ListJobEvents(*tenant, job_id, after);
  if (!events.ok()) return events.status();
  if (events->empty() && wait > 0 && !storage::IsTerminal(job->state)) {
    // In slices, so a server shutting down is not held up by a waiting page.
    absl::Time until = absl::Now() + absl::Seconds(wait);
    while (absl::Now() < until && !(call.env.shutting_down && call.env.shutting_down->load())) {
      absl::StatusOr<bool> more = call.env.registry->WaitForJobEvents(job_id, after, absl::Milliseconds(500));
      if (!more.ok()) return more.status();
      if (*more) break;
    }
    job = call.env.registry->GetJob(*tenant, job_id);
    if (!job.ok()) return job.status();
    events = call.env.registry->ListJobEvents(*tenant, job_id, after);
    if (!events.ok()) return events.status();
  }
  Json train = Json::array(), val = Json::array();
  int64_t last = after;
  for (const storage::JobEvent& e : *events) {
    last = std::max(last, e.seq);
    v1::JobEvent p;
    ToProto(e, &p);
    if (p.has_progress()) train.push_back(Json::array({p.progress().step(), p.progress().train_loss()}));
    if (p.has_eval()) val.push_back(Json::array({p.eval().step(), p.eval().val_loss()}));
  }
  v1::Job jp;
  ToProto(*job, &jp);
  SendJson(call.res, Json{{"job", JobObject(jp)}, {"train", train}, {"val", val}, {"last_seq", last},
                          {"done", storage::IsTerminal(job->state)}});
  return absl::OkStatus();
}

absl::Status Experts(Call& call) {
  absl::StatusOr<std::string> tenant = UrlTenant(call);
  if (!tenant.ok()) return tenant.status();
  int layers = call.env.backbone.num_layers, experts = call.env.backbone.num_experts;
  Json tokens = Json::array();
  for (int l = 0; l < layers; ++l) tokens.push_back(std::vector<double>(experts, 0.0));
  for (const auto& [labels, value] : call.env.metrics->Series("tessera_expert_routed_tokens_total")) {
    std::string t;
    int layer = -1, expert = -1;
    for (const auto& [k, v] : labels) {
      if (k == "tenant") t = v;
      if (k == "layer") absl::SimpleAtoi(v, &layer);
      if (k == "expert") absl::SimpleAtoi(v, &expert);
    }
    if (t != *tenant || layer < 0 || layer >= layers || expert < 0 || expert >= experts) continue;
    tokens[layer][expert] = tokens[layer][expert].get<double>() + value;
  }
  absl::StatusOr<int64_t> live = call.env.registry->GetLive(*tenant);
  if (!live.ok()) return live.status();
  Json overlay = Json::array();
  if (*live > 0) {
    absl::StatusOr<storage::ExpertVersion> v = call.env.registry->GetVersion(*tenant, *live);
    if (!v.ok()) return v.status();
    overlay = SlotsJson(v->slots_json);
  }
  SendJson(call.res, Json{{"tenant_id", *tenant}, {"layers", layers}, {"experts", experts}, {"tokens", tokens},
                          {"live_version", *live}, {"overlay", overlay}});
  return absl::OkStatus();
}

}  // namespace

void RegisterConsoleApi(Router& router) {
  const std::string t = "/console/api/tenants/([a-z][a-z0-9-]*)";
  router.Get("/console/api/me", "/console/api/me", kAnyScope, Me);
  router.Get("/console/api/tenants", "/console/api/tenants", storage::kScopeRead, Tenants);
  router.Get(t, "/console/api/tenants/{t}", storage::kScopeRead, Tenant);
  router.Post(t + "/promote", "/console/api/tenants/{t}/promote", kAnyScope, Promote);
  router.Post(t + "/rollback", "/console/api/tenants/{t}/rollback", kAnyScope, Rollback);
  router.Get(t + "/jobs", "/console/api/tenants/{t}/jobs", storage::kScopeRead, Jobs);
  router.Get(t + "/jobs/([^/]+)/curve", "/console/api/tenants/{t}/jobs/{id}/curve", storage::kScopeRead, Curve);
  router.Get(t + "/experts", "/console/api/tenants/{t}/experts", storage::kScopeRead, Experts);
}

}  // namespace tessera::services::http
