// Per-call authentication and tenant scoping, shared by every service handler.
//
// Every call must carry metadata `authorization: Bearer <api-key>`; the key is checked with
// Registry::AuthenticateKey (only its hash is stored). Results are cached in memory for at most
// `cache_ttl` (1 s), and never past the key's expiry, so hot RPCs (GetJob, Generate) do not hash + query
// SQLite each time; a revocation through this process (Forget) takes effect immediately, one through
// another process within `cache_ttl`, and an expiry at its instant. On each cache miss the key's last
// use is recorded (Registry::TouchApiKey; this process writes it at most once a minute per key).
//
// Order of checks (what the caller sees first): UNAUTHENTICATED (missing, malformed, unknown, revoked or
// expired key) -> INVALID_ARGUMENT (tenant_id missing or not a slug) -> PERMISSION_DENIED (a TENANT key
// naming another tenant, a TENANT key without the RPC's scope -- the message names the scope -- or a
// TENANT key on the Admin service). Error texts never name another tenant.
#pragma once

#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/server_context.h"
#include "storage/registry.h"

namespace tessera::services {

class Authenticator {
 public:
  explicit Authenticator(storage::Registry* registry, absl::Duration cache_ttl = absl::Seconds(1))
      : registry_(registry), cache_ttl_(cache_ttl) {}

  // The bearer secret of the call's metadata -> principal.
  absl::StatusOr<storage::Principal> Authenticate(const grpc::ServerContextBase& ctx);
  absl::StatusOr<storage::Principal> AuthenticateSecret(std::string_view secret);

  // For tenant-facing RPCs: authenticated, `tenant_id` a valid slug, the key may act for it, and it
  // holds `scope` (storage::Scope: what the RPC does; ADMIN keys hold every scope).
  absl::StatusOr<storage::Principal> AuthorizeTenant(const grpc::ServerContextBase& ctx,
                                                     std::string_view tenant_id, storage::Scope scope);
  // For the Admin service: an ADMIN key.
  absl::StatusOr<storage::Principal> AuthorizeAdmin(const grpc::ServerContextBase& ctx);

  // Drops cached entries of `key_id` (call after revoking it).
  void Forget(const std::string& key_id);
  // Drops cached entries of every key of `tenant_id` (call after deleting the tenant).
  void ForgetTenant(const std::string& tenant_id);

  // The scope rule alone (exposed for tests and for the scheduler-free paths).
  static absl::Status CheckTenantScope(const storage::Principal& principal, std::string_view tenant_id);
  // PERMISSION_DENIED naming `scope` unless the principal holds it.
  static absl::Status CheckKeyScope(const storage::Principal& principal, storage::Scope scope);

 private:
  struct Entry {
    storage::Principal principal;
    absl::Time expires;
  };
  storage::Registry* registry_;
  absl::Duration cache_ttl_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> cache_;  // secret -> principal
  std::unordered_map<std::string, absl::Time> touched_;  // key id -> when this process last recorded a use
};

// The actor recorded in audit entries for a principal: its API key id.
inline const std::string& Actor(const storage::Principal& p) { return p.key_id; }

}  // namespace tessera::services
