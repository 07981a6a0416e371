// OverlayCache: tenant overlays in three tiers -- device, host memory, disk -- each bounded, LRU with
// size-aware admission, so many more tenants can be served than fit on the device at once.
//
//   device  overlays in backend buffers, ready to serve; bounded by `device_bytes`
//           (RuntimeOptions::overlay_cache_bytes, the server's --overlay-device-bytes).
//   host    parsed host copies (HostOverlay, host_overlay.h), ready to upload; bounded by `host_bytes`
//           (RuntimeOptions::overlay_host_bytes, --overlay-host-bytes; 0 = no host tier).
//   disk    registry blobs, read through the VersionSource (unbounded here: that is the registry).
// Tiers are exclusive: a version is on the device or on the host, never both (the host copy is dropped
// when it is promoted, made again when it is demoted), so device + host bytes never double count.
// On the CPU backend the device tier is host memory too; the accounting, the copies between tiers and
// the policies are the same (a promotion there is a memcpy instead of a PCIe transfer).
//
// Keyed by (tenant, version >= 1); each entry also records the version's content digest (sha256), which
// is the overlay's identity (ExpertOverlay::digest()) for anything computed from it.
//
// Acquire (blocking; the runtime calls it on a loader thread, never on the decode loop):
//   device hit   -> the resident overlay (most recently used now);
//   host hit     -> promotion: the host copy is uploaded into fresh device buffers and admitted to the
//                   device tier (and leaves the host tier);
//   miss         -> disk load: the blob from the VersionSource, parsed (a LoRA version merged) straight
//                   into device buffers, admitted to the device tier.
// Concurrent acquisitions of a key share one promotion/load. TryAcquireResident is the non-blocking
// part: the device hit alone (the runtime uses it to decide whether a request must wait for a load).
//
// Eviction and admission, per tier (the same rule for both): after an insert, while the tier's bytes
// exceed its budget, the least recently used entry leaves, preferring versions that are not live (live
// = the version the expert table serves by default for its tenant); the entry just inserted leaves last.
// Size-aware admission: an overlay larger than a tier's whole budget is never admitted to that tier (it
// would evict everything and still not fit). Device: it is still served to the acquirer (held, below)
// and goes straight on to the host tier. Host: it is dropped (its next use reads the disk again).
// Demotion: an overlay leaving the device tier is copied to the host tier (if it fits the host budget,
// which then evicts its own LRU entries to disk, i.e. drops them); leaving the host tier = dropped.
// The copies of a demotion run on the acquiring thread after the cache's lock is released, under
// `device_mu` (except on the CPU backend: see DeviceLock). Budgets hold at every instant: device tier
// bytes <= device_bytes, host tier bytes <= host_bytes (asserted after every change in the tests).
//
// Memory accounting: `device_bytes` = overlays the device tier holds. Evicting from the device releases
// only the cache's reference: a request that acquired the overlay keeps it alive until it finishes;
// those bytes are reported as `held_bytes` (evicted, still referenced, at most one overlay per active
// request) and freed when the last holder drops them. Device memory used by overlays = device_bytes +
// held_bytes. A held overlay asked for again is re-admitted from memory (no reload, no second copy;
// counted as a device hit).
//
// Counters: device hits/misses count acquisitions (a miss is a promotion or a disk load); host hits
// (= promotions started) and misses (= disk loads started) count the device misses by where they were
// served from; demotions/promotions count completed moves; loads_in_flight = promotions and disk loads
// running now.
//
// Slab pool (UseSlabPool): device overlays are placed in a preallocated OverlaySlabPool, one slab per
// slot; an overlay's slabs return to the pool when it is freed (evicted and no longer held). When every
// slab is out (more overlays held by in-flight requests than the pool was sized for), a slot falls back
// to a fresh allocation rather than failing the request; `pool_overflow_slots` counts those.
//
// Tenant deletion: ForgetTenant drops the tenant's entries from both tiers (a re-created tenant's
// version N is different content); loads and demotions in flight for it are not admitted.
//
// Thread-safety: every method is thread-safe. The VersionSource is called without the lock held.
// Backend calls (uploads, demotion copies, parsing into device buffers) run under `device_mu` -- the
// runtime's model-call mutex -- interleaving between decode steps; never under the cache's own lock.
// Reading the blob (disk, registry) happens outside both.
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
#include "core/runtime/host_overlay.h"
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
  std::vector<ResidentOverlay> resident;  // device tier, most recently used first
  std::vector<ResidentOverlay> host;      // host tier, most recently used first
  int64_t resident_bytes = 0;   // device tier
  int64_t held_bytes = 0;       // evicted from the device but still referenced by requests
  int64_t capacity_bytes = 0;   // device tier budget
  int64_t host_bytes = 0;
  int64_t host_capacity_bytes = 0;
  int64_t loads = 0;            // disk loads (VersionSource) completed
  int64_t hits = 0;             // device hits (resident or re-admitted)
  int64_t misses = 0;           // device misses (promotions + disk loads started)
  int64_t host_hits = 0;        // device misses found on the host tier (promotions started)
  int64_t host_misses = 0;      // device misses found on neither tier (disk loads started)
  int64_t promotions = 0;       // host -> device moves completed
  int64_t demotions = 0;        // device -> host moves completed
  int64_t readmissions = 0;     // evicted overlays re-admitted while still held
  int64_t evictions = 0;        // entries that left the device tier
  int64_t host_evictions = 0;   // entries that left the host tier (dropped to disk)
  int64_t not_admitted = 0;     // overlays larger than a tier's budget, not admitted to it (both tiers)
  int64_t loads_in_flight = 0;  // promotions and disk loads running now
  int64_t pool_slabs = 0;           // 0: no slab pool
  int64_t pool_slabs_in_use = 0;
  int64_t pool_overflow_slots = 0;  // slots allocated outside the pool because it was full
};

class OverlayCache {
 public:
  // `backend` receives the overlays' buffers, in `dtype` (the model's matrix dtype); `source` and
  // `device_mu` must outlive the cache. `base` (the backbone's weights; must outlive the cache) is what
  // a LoRA version is merged into when loaded (core/model/lora_overlay.h); without it LoRA versions
  // fail to load (FAILED_PRECONDITION). `capacity_bytes` bounds the device tier, `host_bytes` the host
  // tier (0: none; an overlay leaving the device is dropped).
  OverlayCache(const ModelConfig& config, Backend* backend, VersionSource* source, int64_t capacity_bytes,
               std::mutex* device_mu, DType dtype = DType::kF32, const ModelWeights* base = nullptr,
               int64_t host_bytes = 0);

  // The overlay of (tenant, version >= 1): resident, re-admitted, promoted or loaded. Errors of the
  // source pass through (NOT_FOUND for a missing version); a blob that does not parse as an overlay of
  // this model gives the parser's error (DATA_LOSS for a damaged file, INVALID_ARGUMENT naming the
  // tensor for a wrong name or shape). Failed loads are not cached.
  absl::StatusOr<std::shared_ptr<const ExpertOverlay>> Acquire(const std::string& tenant, int64_t version);
  // The device hit of Acquire alone: the overlay if it is on the device tier (or held), else nullptr
  // (nothing counted, nothing started).
  std::shared_ptr<const ExpertOverlay> TryAcquireResident(const std::string& tenant, int64_t version);

  // Records that `version` is the tenant's live version (0 = base: none live), for eviction priority.
  void MarkLive(const std::string& tenant, int64_t version);
  void ForgetTenant(const std::string& tenant);

  // Places every later device load/promotion in `pool` (call before serving starts).
  void UseSlabPool(std::shared_ptr<OverlaySlabPool> pool);

  OverlayCacheStats Stats();
  int64_t capacity_bytes() const { return capacity_bytes_; }
  int64_t host_capacity_bytes() const { return host_capacity_bytes_; }

 private:
  using Key = std::pair<std::string, int64_t>;
  using Result = absl::StatusOr<std::shared_ptr<const ExpertOverlay>>;
  // A tier's LRU position. `live` mirrors live_ (MarkLive keeps it current), so choosing an eviction
  // victim reads a flag per entry instead of looking the tenant up in live_ (with thousands of live
  // tenants, every entry is live and each eviction used to do a map lookup per entry, under mu_).
  struct LruNode {
    Key key;
    bool live = false;
  };
  struct Entry {  // device tier
    std::shared_ptr<const ExpertOverlay> overlay;
    std::string sha256;
    int64_t bytes = 0;
    std::list<LruNode>::iterator lru;  // position in lru_ (front = most recent)
  };
  struct HostEntry {  // host tier
    std::shared_ptr<const HostOverlay> copy;
    int64_t bytes = 0;
    std::list<LruNode>::iterator lru;  // position in host_lru_
  };
  struct Held {
    std::weak_ptr<const ExpertOverlay> overlay;
    std::string sha256;
    int64_t bytes = 0;
  };
  // An overlay that left the device tier and is to be copied to the host tier (outside the lock).
  struct Demotion {
    Key key;
    std::shared_ptr<const ExpertOverlay> overlay;
    uint64_t epoch = 0;
  };

  bool IsLiveLocked(const Key& key) const;
  // Sets the `live` flag of key's LRU node in whichever tier holds it.
  void SetLiveFlagLocked(const Key& key, bool live);
  // The device hit path of Acquire (resident or held); nullptr when neither.
  std::shared_ptr<const ExpertOverlay> ResidentLocked(const Key& key, std::vector<Demotion>* demote);
  // Inserts into the device tier as most recently used (unless larger than the budget), then evicts
  // down to the budget (`key` last); what leaves is appended to `demote`.
  void AdmitLocked(const Key& key, std::shared_ptr<const ExpertOverlay> overlay, std::string sha256,
                   std::vector<Demotion>* demote);
  void EvictLocked(const Key& protect, std::vector<Demotion>* demote);
  // Inserts a host copy as most recently used (unless larger than the host budget), then evicts the
  // host tier down to its budget.
  void AdmitHostLocked(const Key& key, std::shared_ptr<const HostOverlay> copy);
  void EraseHostLocked(std::map<Key, HostEntry>::iterator it);
  // Copies each demoted overlay to the host and admits it there (takes DeviceLock(), then mu_).
  void Demote(std::vector<Demotion> demote);
  // device_mu_ held, except on the CPU backend, whose ops are safe from several threads at once
  // (stateless kernels; the thread pool and the BLAS take turns, core/util/thread_budget.h): there a
  // disk load's parse and LoRA merge, a promotion's upload and a demotion's copy run beside the
  // scheduler's steps instead of stalling every running request for their duration.
  std::unique_lock<std::mutex> DeviceLock() const;
  void PruneHeldLocked();
  SlotAllocator Allocator();

  const ModelConfig config_;
  Backend* const backend_;
  VersionSource* const source_;
  const int64_t capacity_bytes_;
  const int64_t host_capacity_bytes_;
  std::mutex* const device_mu_;
  const DType dtype_;
  const ModelWeights* const base_;

  std::mutex mu_;
  std::map<Key, Entry> entries_;
  std::list<LruNode> lru_;
  std::map<Key, HostEntry> host_;
  std::list<LruNode> host_lru_;
  std::map<Key, Held> held_;                           // evicted, maybe still referenced
  std::map<Key, std::shared_future<Result>> loading_;  // promotions and loads in flight
  std::map<std::string, int64_t> live_;                // tenant -> live version
  std::map<std::string, uint64_t> tenant_epoch_;       // bumped by ForgetTenant
  int64_t resident_bytes_ = 0;
  int64_t host_bytes_ = 0;
  int64_t loads_ = 0, hits_ = 0, misses_ = 0, host_hits_ = 0, host_misses_ = 0, promotions_ = 0,
          demotions_ = 0, readmissions_ = 0, evictions_ = 0, host_evictions_ = 0, not_admitted_ = 0;
  std::shared_ptr<OverlaySlabPool> pool_;
  std::atomic<int64_t> pool_overflow_slots_{0};
};

}  // namespace tessera::runtime
