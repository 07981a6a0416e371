// ExpertTable: which version each tenant is served by default, published by read-copy-update.
//
// The table is an immutable snapshot {tenant -> (live version, its sha256)}; a writer copies the
// current map, changes its copy and publishes it with one pointer swap; readers only copy that pointer
// (under a mutex held for the copy alone: libstdc++ 12's std::atomic<std::shared_ptr> unlocks its
// load with relaxed ordering, which ThreadSanitizer reports as a race with the next store). A request
// reads the snapshot once when it starts and keeps the shared_ptr until it is
// done, so it is served by the version it started with whatever is published meanwhile; the old
// snapshot is freed when its last reader drops it.
//
// The snapshot names versions, it does not own their weights: those live in the OverlayCache
// (bounded by bytes, so a live version that is not being used can be evicted and reloaded), and each
// request holds its overlay's shared_ptr next to the snapshot. Publishing happens only after the new
// version's overlay is resident (Runtime::SetLive), so the first request after a swap does not load.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace tessera::runtime {

struct LiveEntry {
  int64_t version = 0;  // 0 = base experts
  std::string sha256;   // "" for version 0, and for a version first published by a request's lookup
                        // before its overlay was loaded (the request's result carries the digest)
  bool operator==(const LiveEntry&) const = default;
};

class ExpertTable {
 public:
  using Snapshot = std::map<std::string, LiveEntry>;

  ExpertTable();

  // The current snapshot (never null). Readers never wait for a writer's copy-modify step.
  std::shared_ptr<const Snapshot> Current() const {
    std::lock_guard<std::mutex> lock(ptr_mu_);
    return current_;
  }

  // Publishes a copy with `tenant` -> `entry`. Returns the new snapshot.
  std::shared_ptr<const Snapshot> Set(const std::string& tenant, const LiveEntry& entry);
  // Publishes `tenant` -> `entry` only if the tenant has no entry yet; returns the entry the table
  // holds afterwards (a concurrent Set wins over a first-use lookup).
  LiveEntry SetIfAbsent(const std::string& tenant, const LiveEntry& entry);
  void Erase(const std::string& tenant);

  // Number of snapshots published so far (1 = the initial empty one).
  uint64_t generation() const { return generation_.load(); }

 private:
  void Publish(std::shared_ptr<const Snapshot> next);

  mutable std::mutex ptr_mu_;  // guards current_ (the pointer only, held for a copy or a swap)
  std::shared_ptr<const Snapshot> current_;
  std::mutex write_mu_;  // serializes writers' copy-modify-publish
  std::atomic<uint64_t> generation_{1};
};

}  // namespace tessera::runtime
