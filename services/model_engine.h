// ModelEngine: the InferenceEngine over core/model, one request at a time (the single-request
// reference path core/model/generate.h; continuous batching is the runtime's, which replaces this
// class behind the same interface).
//
// Versions: the live table maps tenant -> live version number; it is filled lazily from the registry
// and updated by ServeLive, which first loads the new version's overlay (off the serving path) and then
// swaps the number under the table lock, so every request admitted after ServeLive returns uses it.
// A request resolves its version and takes a shared_ptr to the overlay once, at admission: requests
// in flight finish on their version, and an overlay's memory is freed when its last user drops it.
// Loaded overlays are cached by (tenant, version) in an LRU bounded by bytes; an evicted version is
// reloaded from the blob store (verified by its sha256) on demand.
#pragma once

#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "core/model/overlay.h"
#include "core/tokenizer/tokenizer.h"
#include "services/inference_engine.h"
#include "services/model_host.h"
#include "storage/registry.h"

namespace tessera::services {

class ModelEngine final : public InferenceEngine {
 public:
  ModelEngine(storage::Registry* registry, std::unique_ptr<LoadedModel> model, int64_t cache_bytes);

  BackboneInfo Backbone() const override { return model_->info; }
  absl::StatusOr<GenerateOutput> Generate(const std::string& tenant_id, std::optional<int64_t> version,
                                          const GenerateParams& params, const DeltaCallback& on_delta) override;
  absl::StatusOr<ScoreOutput> Score(const std::string& tenant_id, std::optional<int64_t> version,
                                    std::string_view text, bool return_routing) override;
  absl::Status ServeLive(const std::string& tenant_id, int64_t version) override;
  EngineStatus Status() override;

 private:
  struct Resolved {
    int64_t version = 0;
    std::shared_ptr<const ExpertOverlay> overlay;  // null for version 0
  };
  absl::StatusOr<Resolved> Resolve(const std::string& tenant_id, std::optional<int64_t> version);
  absl::StatusOr<std::shared_ptr<const ExpertOverlay>> LoadOverlay(const std::string& tenant_id, int64_t version);
  std::vector<LayerRoutingStats> ToLayerStats(const RoutingStats& stats) const;

  storage::Registry* registry_;
  std::unique_ptr<LoadedModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  int64_t cache_bytes_;

  std::mutex table_mu_;
  std::map<std::string, int64_t> live_;  // tenant -> live version served

  struct CacheEntry {
    std::shared_ptr<const ExpertOverlay> overlay;
    std::string sha256;
    int64_t bytes = 0;
  };
  std::mutex cache_mu_;
  std::list<std::pair<std::string, int64_t>> lru_;  // front = most recent
  std::map<std::pair<std::string, int64_t>, CacheEntry> cache_;
  int64_t cached_bytes_ = 0;

  std::mutex model_mu_;  // one forward at a time on the shared backend
  std::atomic<int64_t> waiting_{0};
  std::atomic<int64_t> active_{0};
};

}  // namespace tessera::services
