#include "services/audit.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "services/log.h"

namespace tessera::services {

void AuditRefused(const ServiceEnv& env, const storage::Principal& who, const Mutation& m, const absl::Status& s) {
  if (s.ok()) return;
  // Request fields are bounded only by the message size limit: keep the entry small.
  auto clip = [](const std::string& v) { return v.size() > 200 ? v.substr(0, 200) : v; };
  nlohmann::json detail = {{"error", clip(std::string(s.message()))}};
  absl::Status w = env.registry->AppendAudit(Actor(who), m.action, clip(m.target),
                                             detail.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                                             clip(m.tenant_id), std::string(absl::StatusCodeToString(s.code())));
  if (!w.ok()) LogWarn("audit entry not written", {{"action", m.action}, {"error", w.ToString()}});
}

absl::StatusOr<storage::Principal> AuthorizeTenantMutation(const ServiceEnv& env, const grpc::ServerContextBase& ctx,
                                                           storage::Scope scope, const Mutation& m) {
  if (absl::Status s = RequireControlPlane(env, m.action); !s.ok()) return s;
  absl::StatusOr<storage::Principal> p = env.auth->Authenticate(ctx);
  if (!p.ok()) return p.status();
  absl::Status s = Authenticator::CheckTenantScope(*p, m.tenant_id);
  if (s.ok()) s = Authenticator::CheckKeyScope(*p, scope);
  if (!s.ok()) {
    // A malformed tenant_id is the caller's typo, not an attempt on a tenant: not worth an entry.
    if (s.code() != absl::StatusCode::kInvalidArgument) AuditRefused(env, *p, m, s);
    return s;
  }
  return p;
}

absl::StatusOr<storage::Principal> AuthorizeAdminMutation(const ServiceEnv& env, const grpc::ServerContextBase& ctx,
                                                          const Mutation& m) {
  if (absl::Status s = RequireControlPlane(env, m.action); !s.ok()) return s;
  absl::StatusOr<storage::Principal> p = env.auth->Authenticate(ctx);
  if (!p.ok()) return p.status();
  if (p->role != storage::Role::kAdmin) {
    absl::Status s = absl::PermissionDeniedError("the Admin service requires an ADMIN API key");
    AuditRefused(env, *p, m, s);
    return s;
  }
  return p;
}

}  // namespace tessera::services
