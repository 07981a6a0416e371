// OverlayCache: the expert versions resident on the device, bounded by bytes, least recently used out.
//
// Keyed by (tenant, version >= 1); each entry also records the version's content digest (sha256), which
// is the overlay's identity (ExpertOverlay::digest()) for anything computed from it. A miss loads the
// version from the VersionSource and parses it into fresh device buffers on the caller's thread
// (never the decode loop); concurrent misses for the same key share one load.
//
// Eviction: after an insert, while resident bytes exceed the budget, the least recently used entry is
// dropped, preferring versions that are not live (live = the version the expert table serves by
// default for its tenant). The entry just acquired is evicted last, so an overlay larger than the
// whole budget is still served (and then dropped from residency at once).
//
// Memory accounting: `resident_bytes` = overlays the cache holds. Dropping an entry releases only the
// cache's reference: a request that acquired the overlay keeps it alive until it finishes; those bytes
// are reported as `held_bytes` (evicted, still referenced) and freed when the last holder drops them.
// Device memory used by overlays = resident_bytes + held_bytes. A held overlay asked for again is
// re-admitted from memory (no reload, no second copy).
//
// Slab pool (UseSlabPool): loaded overlays are placed in a preallocated OverlaySlabPool, one slab per
// slot; an overlay's slabs return to the pool when it is freed (evicted and no longer held). When every
// slab is out (more overlays held by in-flight requests than the pool was sized for), a slot falls back
// to a fresh allocation rather than failing the request; `pool_overflow_slots` counts those.
//
// Tenant deletion: ForgetTenant drops the tenant's entries (a re-created tenant's version N is
// different content); loads that were in flight for it are not admitted.
//
// Thread-safety: every method is thread-safe. The VersionSource is called without the lock held.
// Building an overlay uploads its tensors through the backend; backends are not safe for concurrent
// use (the CUDA one shares a stream and an upload ring), so that upload runs under `device_mu` — the
// runtime's model-call mutex — interleaving between decode steps. Reading the blob (disk, registry)
// happens outside it.
#pragma once

#include <atomic>
#include <cstdint>
#include <future>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/overlay.h"
#include "core/runtime/overlay_slab_pool.h"
#include "core/runtime/version_source.h"

namespace tessera::runtime {

struct ResidentOverlay {
  std::string tenant;
  int64_t version = 0;
  std::string sha256;
  int64_t bytes = 0;
  bool live = false;
};

struct OverlayCacheStats {
  std::vector<ResidentOverlay> resident;  // most recently used first
  int64_t resident_bytes = 0;
  int64_t held_bytes = 0;       // evicted but still referenced by requests
  int64_t capacity_bytes = 0;
  int64_t loads = 0;            // VersionSource loads completed
  int64_t hits = 0;             // acquisitions served from residency
  int64_t readmissions = 0;     // evicted overlays re-admitted while still held
  int64_t evictions = 0;
  int64_t pool_slabs = 0;           // 0: no slab pool
  int64_t pool_slabs_in_use = 0;
  int64_t pool_overflow_slots = 0;  // slots allocated outside the pool because it was full
};

class OverlayCache {
 public:
  // `backend` receives the overlays' buffers, in `dtype` (the model's matrix dtype); `source` and
  // `device_mu` must outlive the cache. `base` (the backbone's weights; must outlive the cache) is what
  // a LoRA version is merged into when loaded (core/model/lora_overlay.h); without it LoRA versions
  // fail to load (FAILED_PRECONDITION).
  OverlayCache(const ModelConfig& config, Backend* backend, VersionSource* source, int64_t capacity_bytes,
               std::mutex* device_mu, DType dtype = DType::kF32, const ModelWeights* base = nullptr);

  // The overlay of (tenant, version >= 1): resident, re-admitted, or loaded. Errors of the source pass
  // through (NOT_FOUND for a missing version); a blob that does not parse as an overlay of this
  // model gives the parser's error (DATA_LOSS for a damaged file, INVALID_ARGUMENT naming the tensor
  // for a wrong name or shape). Failed loads are not cached.
  absl::StatusOr<std::shared_ptr<const ExpertOverlay>> Acquire(const std::string& tenant, int64_t version);

  // Records that `version` is the tenant's live version (0 = base: none live), for eviction priority.
  void MarkLive(const std::string& tenant, int64_t version);
  void ForgetTenant(const std::string& tenant);

  // Places every later load in `pool` (call before serving starts).
  void UseSlabPool(std::shared_ptr<OverlaySlabPool> pool);

  OverlayCacheStats Stats();
  int64_t capacity_bytes() const { return capacity_bytes_; }

 private:
  using Key = std::pair<std::string, int64_t>;
  using Result = absl::StatusOr<std::shared_ptr<const ExpertOverlay>>;
  struct Entry {
    std::shared_ptr<const ExpertOverlay> overlay;
    std::string sha256;
    int64_t bytes = 0;
    std::list<Key>::iterator lru;  // position in lru_ (front = most recent)
  };
  struct Held {
    std::weak_ptr<const ExpertOverlay> overlay;
    std::string sha256;
    int64_t bytes = 0;
  };

  bool IsLiveLocked(const Key& key) const;
  // Inserts as most recently used, then evicts down to the budget (`key` last).
  void AdmitLocked(const Key& key, std::shared_ptr<const ExpertOverlay> overlay, std::string sha256);
  void EvictLocked(const Key& key);
  void PruneHeldLocked();

  const ModelConfig config_;
  Backend* const backend_;
  VersionSource* const source_;
  const int64_t capacity_bytes_;
  std::mutex* const device_mu_;
  const DType dtype_;
  const ModelWeights* const base_;

  std::mutex mu_;
  std::map<Key, Entry> entries_;
  std::list<Key> lru_;
  std::map<Key, Held> held_;                           // evicted, maybe still referenced
  std::map<Key, std::shared_future<Result>> loading_;  // loads in flight
  std::map<std::string, int64_t> live_;                // tenant -> live version
  std::map<std::string, uint64_t> tenant_epoch_;       // bumped by ForgetTenant
  int64_t resident_bytes_ = 0;
  int64_t loads_ = 0, hits_ = 0, readmissions_ = 0, evictions_ = 0;
  std::shared_ptr<OverlaySlabPool> pool_;
  std::atomic<int64_t> pool_overflow_slots_{0};
};

}  // namespace tessera::runtime
