#include "services/http/auth.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace tessera::services::http {
namespace {

absl::Status ModelNotFound(const std::string& model) {
  return absl::NotFoundError(
      absl::StrCat("model: The model `", model, "` does not exist or you do not have access to it."));
}

}  // namespace

absl::StatusOr<storage::Principal> Authenticate(const ServiceEnv& env, const httplib::Request& req) {
  if (!req.has_header("Authorization")) {
    return absl::UnauthenticatedError(
        "You didn't provide an API key. Send it in an Authorization header: \"Authorization: Bearer <key>\".");
  }
  std::string value(absl::StripAsciiWhitespace(req.get_header_value("Authorization")));
  if (value.size() < 7 || !absl::StartsWithIgnoreCase(value, "bearer ")) {
    return absl::UnauthenticatedError("malformed Authorization header: expected \"Bearer <key>\"");
  }
  std::string secret(absl::StripAsciiWhitespace(absl::string_view(value).substr(7)));
  absl::StatusOr<storage::Principal> p = env.auth->AuthenticateSecret(std::string_view(secret));
  if (!p.ok() && p.status().code() == absl::StatusCode::kUnauthenticated) {
    return absl::UnauthenticatedError("Incorrect API key provided (invalid or revoked).");
  }
  return p;
}

std::optional<ModelName> ParseModelName(const std::string& model) {
  ModelName out;
  size_t colon = model.find(':');
  out.tenant = model.substr(0, colon);
  if (!storage::ValidateTenantId(out.tenant).ok()) return std::nullopt;
  if (colon != std::string::npos) {
    std::string v = model.substr(colon + 1);
    int64_t n = 0;
    if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos || !absl::SimpleAtoi(v, &n)) {
      return std::nullopt;
    }
    out.version = n;
  }
  return out;
}

std::string FormatModelName(const std::string& tenant, std::optional<int64_t> version) {
  return version ? absl::StrCat(tenant, ":", *version) : tenant;
}

absl::StatusOr<ModelRef> ResolveModel(const ServiceEnv& env, const storage::Principal& principal,
                                      const std::string& model) {
  std::optional<ModelName> name = ParseModelName(model);
  if (!name) return ModelNotFound(model);
  if (principal.role != storage::Role::kAdmin && principal.tenant_id != name->tenant) return ModelNotFound(model);
  ModelRef ref;
  ref.tenant = name->tenant;
  absl::StatusOr<int64_t> live = env.registry->GetLive(name->tenant);  // NOT_FOUND: no such tenant
  if (!live.ok()) return live.status().code() == absl::StatusCode::kNotFound ? ModelNotFound(model) : live.status();
  if (!name->version) {
    ref.version = *live;
    ref.live = true;
  } else {
    ref.version = *name->version;
    if (ref.version > 0) {
      absl::StatusOr<storage::ExpertVersion> v = env.registry->GetVersion(ref.tenant, ref.version);
      if (!v.ok()) return v.status().code() == absl::StatusCode::kNotFound ? ModelNotFound(model) : v.status();
    }
  }
  return ref;
}

absl::StatusOr<std::string> TenantOf(const ServiceEnv& env, const storage::Principal& principal,
                                     const httplib::Request& req, bool admin_may_omit) {
  std::string named = req.get_header_value(kTenantHeader);
  std::string tenant;
  if (principal.role == storage::Role::kAdmin) {
    if (named.empty()) {
      if (admin_may_omit) return std::string();
      return absl::InvalidArgumentError(absl::StrCat(
          "an admin key names the tenant of this route in the ", kTenantHeader, " header"));
    }
    tenant = named;
  } else {
    tenant = principal.tenant_id;
    if (!named.empty() && named != tenant) {
      return absl::PermissionDeniedError("this API key may not act for the requested tenant");
    }
  }
  if (absl::Status s = storage::ValidateTenantId(tenant); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(kTenantHeader, ": ", s.message()));
  }
  if (absl::StatusOr<storage::Tenant> t = env.registry->GetTenant(tenant); !t.ok()) return t.status();
  return tenant;
}

absl::StatusOr<std::vector<storage::Tenant>> VisibleTenants(const ServiceEnv& env,
                                                            const storage::Principal& principal) {
  if (principal.role == storage::Role::kAdmin) return env.registry->ListTenants();
  absl::StatusOr<storage::Tenant> t = env.registry->GetTenant(principal.tenant_id);
  if (!t.ok()) return t.status();
  return std::vector<storage::Tenant>{*std::move(t)};
}

}  // namespace tessera::services::http
