// LiveControl: moves a tenant's live pointer in the registry and waits until the runtime serves it.
// The one path for Admin.Promote, Admin.Rollback and the scheduler's auto-promotion, so "the call
// returned" always means "the runtime serves it". Calls for one tenant are serialized, so the runtime
// applies moves in the registry's order.
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
  // `engine` may be null (no runtime: the registry move alone).
  LiveControl(storage::Registry* registry, InferenceEngine* engine)
      : registry_(registry), engine_(engine) {}

  absl::StatusOr<storage::LiveMove> Promote(const std::string& tenant_id, int64_t version,
                                            const std::string& actor);
  absl::StatusOr<storage::LiveMove> Rollback(const std::string& tenant_id,
                                             std::optional<int64_t> to_version, const std::string& actor);

 private:
  std::mutex& TenantMutex(const std::string& tenant_id);
  absl::Status Sync(const std::string& tenant_id, int64_t live);

  storage::Registry* registry_;
  InferenceEngine* engine_;
  std::mutex map_mu_;
  std::map<std::string, std::unique_ptr<std::mutex>> tenant_mu_;
};

}  // namespace tessera::services
