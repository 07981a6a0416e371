// TenantSweeper: makes a tenant deleted on the control plane disappear from an inference replica or
// trainer too (issue 21: "tenant deletion propagated").
//
// Admin.DeleteTenant runs on the control plane: it removes the tenant's rows from the shared registry,
// forgets the tenant in its own runtime and auth cache, and deletes the blobs. Another process learns
// nothing from the change feed (the tenant's feed rows go with it), so without this a replica would
// keep the tenant's overlays resident -- and serve them to a tenant re-created under the same id,
// whose live pointer starts at the base -- and its blob cache would keep the deleted weights on disk.
//
// Every `interval` a thread lists the registry's tenants (one read: id and created_at). A tenant this
// process saw in the previous round that is gone, or whose created_at changed (deleted and re-created
// in between), is reported to `on_deleted` (the server forgets it in the runtime, LiveControl and the
// auth cache). Then, and in the first round (deletions made while this process was down), the blob
// cache is pruned: every cached blob that no registry row references any more (Registry::
// ReferencedBlobs, the garbage collector's rule) and that was not written in the last `cache_grace`
// is deleted. Cached blobs are copies the owner still verifies, so deleting one is always safe: a
// later reader fetches it again.
// Thread-safety: SweepOnce may be called from any thread (tests); rounds are serialized.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "storage/blob_store.h"
#include "storage/registry.h"

namespace tessera::services {

class TenantSweeper {
 public:
  struct Options {
    absl::Duration interval = absl::Seconds(2);
    // Called once per deleted (or re-created) tenant, on the sweeper's thread.
    std::function<void(const std::string& tenant_id)> on_deleted;
    // The blob cache to prune (a RemoteBlobStore's); null: nothing to prune.
    storage::BlobStore* cache = nullptr;
    // Cached blobs written more recently than this are kept (a fetch racing the round).
    absl::Duration cache_grace = absl::Seconds(60);
  };
  struct Round {
    std::vector<std::string> deleted;  // tenants reported to on_deleted
    int64_t cache_pruned = 0;          // cached blobs deleted
  };

  TenantSweeper(storage::Registry* registry, Options options);
  ~TenantSweeper();

  void Start();
  void Stop();
  // One round (what the thread does every interval).
  absl::StatusOr<Round> SweepOnce();

  int64_t tenants_forgotten() const { return tenants_forgotten_.load(); }
  int64_t cache_pruned() const { return cache_pruned_.load(); }

 private:
  absl::StatusOr<int64_t> PruneCache();

  storage::Registry* registry_;
  Options options_;
  std::mutex round_mu_;                      // one round at a time
  bool first_round_ = true;                  // guarded by round_mu_
  std::map<std::string, int64_t> known_;     // tenant -> created_at_us, guarded by round_mu_
  std::atomic<int64_t> tenants_forgotten_{0}, cache_pruned_{0};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;  // guarded by stop_mu_
  std::thread thread_;
};

}  // namespace tessera::services
