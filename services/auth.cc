#include "services/auth.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace tessera::services {
namespace {
constexpr size_t kMaxCacheEntries = 4096;
constexpr absl::Duration kTouchInterval = absl::Minutes(1);

// (absl::string_view is not std::string_view in this Abseil build.)
std::string_view Trim(std::string_view s) {
  while (!s.empty() && absl::ascii_isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && absl::ascii_isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}
}  // namespace

absl::StatusOr<storage::Principal> Authenticator::Authenticate(const grpc::ServerContextBase& ctx) {
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return absl::UnauthenticatedError(
        "missing API key: send metadata \"authorization: Bearer <api-key>\"");
  }
  std::string_view value(it->second.data(), it->second.size());
  value = Trim(value);
  if (value.size() < 7 || !absl::StartsWithIgnoreCase(absl::string_view(value.data(), value.size()), "bearer ")) {
    return absl::UnauthenticatedError(
        "malformed authorization metadata: expected \"Bearer <api-key>\"");
  }
  return AuthenticateSecret(Trim(value.substr(7)));
}

absl::StatusOr<storage::Principal> Authenticator::AuthenticateSecret(std::string_view secret) {
  std::string key(secret);
  absl::Time now = absl::Now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      if (it->second.expires > now) return it->second.principal;
      cache_.erase(it);
    }
  }
  absl::StatusOr<storage::Principal> p = registry_->AuthenticateKey(key);
  if (!p.ok()) {
    if (p.status().code() == absl::StatusCode::kUnauthenticated) {
      return absl::UnauthenticatedError("invalid, revoked or expired API key");
    }
    return p.status();
  }
  absl::Time until = now + cache_ttl_;
  if (p->expires_at_us != 0) until = std::min(until, absl::FromUnixMicros(p->expires_at_us));
  bool touch = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    if (touched_.size() >= kMaxCacheEntries) touched_.clear();
    cache_[key] = Entry{*p, until};
    auto [it, inserted] = touched_.try_emplace(p->key_id, now);
    if (inserted || now - it->second >= kTouchInterval) {
      it->second = now;
      touch = true;
    }
  }
  // Best effort: a failed write of the last-use time must not fail the caller's request.
  if (touch) (void)registry_->TouchApiKey(p->key_id);
  return p;
}

absl::Status Authenticator::CheckTenantScope(const storage::Principal& principal,
                                             std::string_view tenant_id) {
  if (tenant_id.empty()) return absl::InvalidArgumentError("tenant_id is required");
  if (absl::Status s = storage::ValidateTenantId(tenant_id); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("tenant_id: ", s.message()));
  }
  if (principal.role == storage::Role::kAdmin) return absl::OkStatus();
  if (principal.tenant_id != tenant_id) {
    return absl::PermissionDeniedError("this API key may not act for the requested tenant_id");
  }
  return absl::OkStatus();
}

absl::Status Authenticator::CheckKeyScope(const storage::Principal& principal, storage::Scope scope) {
  if (principal.role == storage::Role::kAdmin || (principal.scopes & scope) != 0) return absl::OkStatus();
  const std::string has = storage::ScopesToString(principal.scopes);
  return absl::PermissionDeniedError(absl::StrCat(
      "this API key lacks the scope \"", std::string(storage::ScopeName(scope)), "\" (it has: ",
      has.empty() ? "none" : has, "); issue a key with --scopes ", std::string(storage::ScopeName(scope))));
}

absl::StatusOr<storage::Principal> Authenticator::AuthorizeTenant(const grpc::ServerContextBase& ctx,
                                                                  std::string_view tenant_id,
                                                                  storage::Scope scope) {
  absl::StatusOr<storage::Principal> p = Authenticate(ctx);
  if (!p.ok()) return p.status();
  if (absl::Status s = CheckTenantScope(*p, tenant_id); !s.ok()) return s;
  if (absl::Status s = CheckKeyScope(*p, scope); !s.ok()) return s;
  return p;
}

absl::StatusOr<storage::Principal> Authenticator::AuthorizeAdmin(const grpc::ServerContextBase& ctx) {
  absl::StatusOr<storage::Principal> p = Authenticate(ctx);
  if (!p.ok()) return p.status();
  if (p->role != storage::Role::kAdmin) {
    return absl::PermissionDeniedError("the Admin service requires an ADMIN API key");
  }
  return p;
}

void Authenticator::ForgetTenant(const std::string& tenant_id) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = cache_.begin(); it != cache_.end();) {
    if (it->second.principal.tenant_id == tenant_id) it = cache_.erase(it);
    else ++it;
  }
}

void Authenticator::Forget(const std::string& key_id) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = cache_.begin(); it != cache_.end();) {
    if (it->second.principal.key_id == key_id) it = cache_.erase(it);
    else ++it;
  }
}

}  // namespace tessera::services
