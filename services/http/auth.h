// Who is calling and what a model name means, for the HTTP API. Same keys and tenants as gRPC: the key
// comes from `Authorization: Bearer <key>` and is checked by the server's Authenticator.
//
// Model names (shared/API.md, "Additions" -> "HTTP"): `<tenant>` = the tenant's live version,
// `<tenant>:<N>` = version N, `<tenant>:0` = the base experts. A TENANT key may name only its own
// tenant; an ADMIN key names any tenant this way. A name the caller cannot use -- malformed, another
// tenant's, an unknown tenant or version -- is one 404 ("model: The model `x` does not exist or you do not
// have access to it."), as OpenAI answers, so a key learns nothing about other tenants.
//
// The live version is resolved here, from the registry, before generation starts: the version is then
// known before the first streamed byte (the X-Tessera-Expert-Version header), and a request that starts
// after a promote returned is served by the promoted version (the registry moves first).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "httplib.h"
#include "services/service_env.h"

namespace tessera::services::http {

// The header through which an ADMIN key names the tenant of tenant-scoped routes without a model
// (files, job lookups). A TENANT key's tenant always comes from the key (the header must then match).
inline constexpr char kTenantHeader[] = "X-Tessera-Tenant";
// The response header naming the expert version that served a completion.
inline constexpr char kExpertVersionHeader[] = "X-Tessera-Expert-Version";

absl::StatusOr<storage::Principal> Authenticate(const ServiceEnv& env, const httplib::Request& req);

struct ModelName {
  std::string tenant;
  std::optional<int64_t> version;  // nullopt: live
};
// Syntax only: "<tenant>" or "<tenant>:<N>" with N >= 0 (nullopt when malformed).
std::optional<ModelName> ParseModelName(const std::string& model);
std::string FormatModelName(const std::string& tenant, std::optional<int64_t> version);

struct ModelRef {
  std::string tenant;
  int64_t version = 0;  // resolved (the live version for a `<tenant>` name)
  bool live = false;    // named as `<tenant>`
};
absl::StatusOr<ModelRef> ResolveModel(const ServiceEnv& env, const storage::Principal& principal,
                                      const std::string& model);

// The tenant of a tenant-scoped route: a TENANT key's own; an ADMIN key's from kTenantHeader (400 when
// missing unless `admin_may_omit`, then "" = every tenant). The tenant must exist (404).
absl::StatusOr<std::string> TenantOf(const ServiceEnv& env, const storage::Principal& principal,
                                     const httplib::Request& req, bool admin_may_omit = false);

// The tenants a caller may see: every tenant for an ADMIN key, a TENANT key's own otherwise.
absl::StatusOr<std::vector<storage::Tenant>> VisibleTenants(const ServiceEnv& env,
                                                            const storage::Principal& principal);

}  // namespace tessera::services::http
