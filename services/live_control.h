// LiveControl: moves a tenant's live pointer in the registry and waits until the runtime serves it.
// The one path for Admin.Promote, Admin.Rollback and the scheduler's auto-promotion, so "the call
// returned" always means "the runtime serves it". Calls for one tenant are serialized, so the runtime
// applies moves in the registry's order.
//
// Resync is the LiveFollower's path for moves made by another process: under the same per-tenant lock
// it reads the tenant's live pointer from the registry *now* and serves that, so a follower applying a
// change late can never put back an older version over a newer one (it always applies the newest), and
// it never interleaves with a Promote/Rollback of this process.
//
// Promote(v) and Rollback(to=v) refuse, before moving anything, a version trained on a backbone other
// than `backbone_sha256` (services/version_backbone.h: FAILED_PRECONDITION naming both digests). A plain
// Rollback picks its target inside the registry; should that target be such a version, the runtime
// refuses to load it and the call reports that the pointer moved but is not served.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "services/inference_engine.h"
#include "storage/registry.h"

namespace tessera::services {

class LiveControl {
 public:
  // `engine` may be null (no runtime: the registry move alone). `backbone_sha256`: the digest of the
  // backbone this process serves ("" = unknown: versions are not checked).
  LiveControl(storage::Registry* registry, InferenceEngine* engine, std::string backbone_sha256 = "")
      : registry_(registry), engine_(engine), backbone_sha256_(std::move(backbone_sha256)) {}

  // The digest of the backbone this process serves ("" = unknown).
  const std::string& backbone_sha256() const { return backbone_sha256_; }

  absl::StatusOr<storage::LiveMove> Promote(const std::string& tenant_id, int64_t version,
                                            const std::string& actor);
  absl::StatusOr<storage::LiveMove> Rollback(const std::string& tenant_id,
                                             std::optional<int64_t> to_version, const std::string& actor);
  // Makes the runtime serve the tenant's current registry live version; a no-op when this process
  // already made the runtime serve exactly that version.
  absl::Status Resync(const std::string& tenant_id);
  // Tenant deletion (after the registry rows are gone): the runtime forgets the tenant, under the
  // tenant's lock so no Promote/Resync of it interleaves, and so does this object's record of it.
  void ForgetTenant(const std::string& tenant_id);

 private:
  std::mutex& TenantMutex(const std::string& tenant_id);
  absl::Status Sync(const std::string& tenant_id, int64_t live);

  storage::Registry* registry_;
  InferenceEngine* engine_;
  const std::string backbone_sha256_;
  std::mutex map_mu_;
  std::map<std::string, std::unique_ptr<std::mutex>> tenant_mu_;
  // The version the runtime was last told to serve per tenant (only written under the tenant's mutex).
  std::mutex served_mu_;
  std::map<std::string, int64_t> served_;
};

}  // namespace tessera::services
