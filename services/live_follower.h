// LiveFollower: keeps the runtime in step with live-pointer moves made by other processes.
//
// The registry may be written by more than this server (a second control-plane process, an admin tool
// opening the data dir directly). Their Promote/Rollback land in the registry's change feed but never
// reach this process's runtime, which would keep serving the old version. A background thread waits on
// the feed (Registry::WaitForChange: in-process wake-ups plus polling of the database) from the
// sequence the server started at, and for every tenant whose live pointer moved calls
// LiveControl::Resync, which serves the tenant's live version as the registry has it at apply time.
// Changes are consumed in sequence order and each apply re-reads the registry, so a late apply can
// only ever install the newest version. Moves made through this process's LiveControl were already
// served synchronously; their Resync finds the same version and does nothing.
//
// The feed is the registry's (polled) or, on an inference replica, the control plane's watch stream
// (services/change_watcher.h). Each round also reads the feed's head first and moves the cursor to it
// once the round's changes are applied: changes of a deleted tenant are gone, and a cursor left below
// the head would make every wait return at once.
//
// A tenant whose resync fails (its version's blob unreadable, say) is retried every retry_interval
// until it succeeds or a newer move supersedes it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "services/change_feed.h"
#include "services/live_control.h"
#include "storage/registry.h"

namespace tessera::services {

class LiveFollower {
 public:
  struct Options {
    // Longest wait on the feed per round; also bounds how long Stop() takes.
    absl::Duration poll = absl::Milliseconds(250);
    absl::Duration retry_interval = absl::Seconds(5);
    int batch = 256;  // changes read per query
    // Called (on the follower's thread) whenever the cursor advances, with the new cursor: a replica
    // reports what it serves to the control plane (services/replicas.h).
    std::function<void(int64_t)> on_applied;
  };

  // Follows changes with seq > from_seq, read from `feed` (not owned; null: the registry itself).
  LiveFollower(storage::Registry* registry, LiveControl* live, int64_t from_seq, Options options,
               ChangeFeed* feed = nullptr);
  ~LiveFollower();

  void Start();
  void Stop();

  // Reads and applies every change after the cursor (and retries failed tenants when due). The
  // thread's round; public so tests and callers can force a catch-up.
  absl::Status CatchUp();
  // The sequence up to which changes have been applied (or handed to the retry set).
  int64_t cursor() const { return cursor_.load(); }

 private:
  void Loop();

  RegistryChangeFeed registry_feed_;
  ChangeFeed* feed_;  // registry_feed_ or the caller's
  LiveControl* live_;
  Options options_;
  std::atomic<int64_t> cursor_;
  std::mutex catch_up_mu_;            // one CatchUp at a time (thread vs. explicit callers)
  std::set<std::string> retry_;       // guarded by catch_up_mu_
  absl::Time next_retry_ = absl::InfinitePast();
  std::atomic<bool> retry_pending_{false};  // !retry_.empty(), readable without the lock
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace tessera::services
