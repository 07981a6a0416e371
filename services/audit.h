// Audit of refused mutations, and the authorization step of mutating RPCs that records them.
//
// Successful mutations are audited by the registry in the same transaction as the change (result "OK",
// storage/registry.h). A mutation that an authenticated caller attempts and that is refused -- another
// tenant's id, a missing scope, a TENANT key on the Admin service, a failed precondition, a bad
// argument -- is recorded here with result = the canonical code (e.g. "PERMISSION_DENIED") and the
// message as detail. Unauthenticated attempts are not recorded (metrics and the log count them): the
// audit log must not be a table anyone on the network can grow. Recording is best effort: a failure to
// write the entry is logged and never changes the caller's answer.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/service_env.h"

namespace tessera::services {

// What a mutation is about: the audit action ("job.create"), its tenant ("" for none) and object
// ("tenant/acme", "job/job_x").
struct Mutation {
  std::string action;
  std::string tenant_id;
  std::string target;
};

// Records `s` (when not OK) as a refused `m` by `who`.
void AuditRefused(const ServiceEnv& env, const storage::Principal& who, const Mutation& m, const absl::Status& s);

// Both refuse first, before authenticating, on a process that does not make registry changes (an
// inference replica or a trainer: RequireControlPlane in service_env.h).
// Authenticator::AuthorizeTenant for a mutating RPC: a refusal after authentication is audited.
absl::StatusOr<storage::Principal> AuthorizeTenantMutation(const ServiceEnv& env, const grpc::ServerContextBase& ctx,
                                                           storage::Scope scope, const Mutation& m);

// Authenticator::AuthorizeAdmin for a mutating Admin RPC: a TENANT key's attempt is audited.
absl::StatusOr<storage::Principal> AuthorizeAdminMutation(const ServiceEnv& env, const grpc::ServerContextBase& ctx,
                                                          const Mutation& m);

}  // namespace tessera::services
