#include "services/replicas.h"

#include <set>

#include "absl/time/clock.h"
#include "services/log.h"

namespace tessera::services {

ReplicaPresence::ReplicaPresence(storage::Registry* registry, Options options, std::function<int64_t()> applied)
    : registry_(registry), options_(std::move(options)), applied_(std::move(applied)) {
  if (options_.interval <= absl::ZeroDuration()) options_.interval = absl::Seconds(1);
}

ReplicaPresence::~ReplicaPresence() { Stop(false); }

void ReplicaPresence::SetIdentity(std::string replica_id, std::string address) {
  std::lock_guard<std::mutex> lock(mu_);
  options_.replica_id = std::move(replica_id);
  options_.address = std::move(address);
}

std::string ReplicaPresence::replica_id() const {
  std::lock_guard<std::mutex> lock(mu_);
  return options_.replica_id;
}

absl::Status ReplicaPresence::Beat() {
  storage::Replica r;
  {
    std::lock_guard<std::mutex> lock(mu_);
    r.replica_id = options_.replica_id;
    r.address = options_.address;
  }
  r.role = options_.role;
  r.applied_seq = applied_ ? applied_() : 0;
  r.started_at_us = started_at_us_;
  return registry_->HeartbeatReplica(r);
}

absl::Status ReplicaPresence::Register() {
  started_at_us_ = absl::ToUnixMicros(absl::Now());
  return Beat();
}

void ReplicaPresence::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void ReplicaPresence::Notify() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    notified_ = true;
  }
  cv_.notify_all();
}

void ReplicaPresence::Loop() {
  absl::Time next_error_log = absl::InfinitePast();
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait_for(lock, absl::ToChronoMilliseconds(options_.interval), [this] { return stopping_ || notified_; });
    if (stopping_) return;
    notified_ = false;
    lock.unlock();
    absl::Status s = Beat();
    // A registry outage is retried next beat; the control plane sees the row age meanwhile.
    if (!s.ok() && absl::Now() >= next_error_log) {
      LogError("replica heartbeat failed", {{"replica_id", replica_id()}, {"error", s.ToString()}});
      next_error_log = absl::Now() + absl::Seconds(30);
    }
    lock.lock();
  }
}

void ReplicaPresence::Stop(bool deregister) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (deregister) {
    const std::string id = replica_id();
    if (absl::Status s = registry_->RemoveReplica(id); !s.ok()) {
      LogWarn("could not deregister the replica", {{"replica_id", id}, {"error", s.ToString()}});
    }
  }
}

absl::StatusOr<ReplicaWait> WaitForReplicas(storage::Registry& registry, int64_t seq, absl::Duration deadline,
                                            absl::Duration fresh, absl::Duration poll) {
  const absl::Time end = absl::Now() + deadline;
  // The replicas that count are those alive (fresh) when the wait starts. One that stops heartbeating
  // during the wait without having applied the move is lagging at once: waiting longer for it is futile.
  std::set<std::string> candidates;
  bool first = true;
  for (;;) {
    absl::StatusOr<std::vector<storage::Replica>> all = registry.ListReplicas();
    if (!all.ok()) return all.status();
    const int64_t oldest = absl::ToUnixMicros(absl::Now() - fresh);
    ReplicaWait w;
    bool pending = false;
    for (const storage::Replica& r : *all) {
      if (r.role != "inference") continue;
      if (first && r.heartbeat_at_us >= oldest) candidates.insert(r.replica_id);
      if (!candidates.count(r.replica_id)) continue;
      if (r.applied_seq >= seq) {
        ++w.applied;
      } else {
        w.lagging.push_back(r.replica_id);
        if (r.heartbeat_at_us >= oldest) pending = true;  // alive: it may still apply it
      }
    }
    // A candidate whose row vanished stopped cleanly: it serves nothing any more, so it is not lagging.
    first = false;
    if (!pending || absl::Now() >= end) return w;
    absl::SleepFor(std::min(poll, end - absl::Now()));
  }
}

ReplicaWait AwaitReplicas(const ServiceEnv& env, const storage::LiveMove& move) {
  if (env.replica_wait <= absl::ZeroDuration() || env.registry == nullptr) return ReplicaWait();
  absl::StatusOr<ReplicaWait> w = WaitForReplicas(*env.registry, move.seq, env.replica_wait, env.replica_fresh);
  if (!w.ok()) {
    LogError("could not read the replica table after a live-pointer move",
             {{"tenant_id", move.tenant_id}, {"seq", move.seq}, {"error", w.status().ToString()}});
    return ReplicaWait();
  }
  if (!w->lagging.empty()) {
    std::string ids;
    for (const std::string& id : w->lagging) ids += (ids.empty() ? "" : ",") + id;
    LogWarn("inference replicas did not serve a live-pointer move in time",
            {{"tenant_id", move.tenant_id}, {"seq", move.seq}, {"live_version", move.live_version},
             {"lagging", ids}, {"wait_s", absl::ToDoubleSeconds(env.replica_wait)}});
  }
  return *w;
}

}  // namespace tessera::services
