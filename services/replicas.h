// Replicas of the control plane (tessera-server --role inference|trainer) and the control plane's wait
// for them (ARCHITECTURE.md "Scale-out").
//
// ReplicaPresence runs in each following process: it writes the process's row in the shared registry's
// replica table (storage: Registry::HeartbeatReplica) every `interval`, carrying the change-feed
// sequence whose live-pointer moves the process serves (the LiveFollower's cursor; 0 on a trainer), and
// at once whenever that sequence advances (Notify), so the control plane learns of an applied move within
// one registry write. Stop(deregister=true) removes the row (a clean stop); a crashed process's row stops
// being refreshed and, once older than the freshness window, no longer counts.
//
// WaitForReplicas runs on the control plane after Promote/Rollback committed change `seq`: it polls the
// replica table until every inference replica whose heartbeat was younger than `fresh` when the wait
// began reports applied_seq >= seq, or `deadline` passes; the replicas still behind are returned by id
// (lagging), so the caller can say which replica did not serve the move in time. A replica that stops
// heartbeating during the wait (its row grows older than `fresh`) without having applied the move is
// lagging at once: the wait does not hold out for a dead process. One whose row disappears stopped
// cleanly and counts as neither. The move itself is already committed
// and served by the control plane: lagging replicas catch up from the change feed when they can.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/service_env.h"
#include "storage/registry.h"

namespace tessera::services {

class ReplicaPresence {
 public:
  struct Options {
    std::string replica_id;
    std::string role;     // "inference" | "trainer"
    std::string address;  // HOST:PORT it serves gRPC on
    absl::Duration interval = absl::Seconds(1);
  };
  // `applied`: the sequence to report (the follower's cursor; null: 0).
  ReplicaPresence(storage::Registry* registry, Options options, std::function<int64_t()> applied);
  ~ReplicaPresence();

  // Where the process serves, once its port is bound (before Register); thread-safe with replica_id().
  void SetIdentity(std::string replica_id, std::string address);
  std::string replica_id() const;
  // The first heartbeat, synchronously: a registry that refuses it fails the process's start.
  absl::Status Register();
  void Start();
  // Writes the row now (from the heartbeat thread) instead of at the next interval.
  void Notify();
  // Stops the thread; deregister: remove the row.
  void Stop(bool deregister);

 private:
  absl::Status Beat();
  void Loop();

  storage::Registry* registry_;
  Options options_;
  std::function<int64_t()> applied_;
  int64_t started_at_us_ = 0;
  mutable std::mutex mu_;  // guards options_.replica_id/address, notified_, stopping_
  std::condition_variable cv_;
  bool notified_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

struct ReplicaWait {
  int64_t applied = 0;                // fresh inference replicas that had applied seq
  std::vector<std::string> lagging;   // fresh inference replicas that had not, by id
};

// See the top comment. `poll`: how often the replica table is read while waiting.
absl::StatusOr<ReplicaWait> WaitForReplicas(storage::Registry& registry, int64_t seq, absl::Duration deadline,
                                            absl::Duration fresh, absl::Duration poll = absl::Milliseconds(20));

// Promote/Rollback's wait on the control plane (env.replica_wait; zero: none) for `move`; lagging
// replicas are logged. A replica table that cannot be read is logged and reported as no wait (the
// move is committed either way).
ReplicaWait AwaitReplicas(const ServiceEnv& env, const storage::LiveMove& move);

}  // namespace tessera::services
