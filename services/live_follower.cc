#include "services/live_follower.h"

#include <algorithm>
#include <vector>

#include "services/log.h"

namespace tessera::services {

LiveFollower::LiveFollower(storage::Registry* registry, LiveControl* live, int64_t from_seq,
                           Options options, ChangeFeed* feed)
    : registry_feed_(registry),
      feed_(feed != nullptr ? feed : &registry_feed_),
      live_(live),
      options_(options),
      cursor_(from_seq) {
  if (options_.batch < 1) options_.batch = 1;
  if (options_.poll <= absl::ZeroDuration()) options_.poll = absl::Milliseconds(250);
}

LiveFollower::~LiveFollower() { Stop(); }

void LiveFollower::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void LiveFollower::Stop() {
  stopping_.store(true);
  if (thread_.joinable()) thread_.join();
}

absl::Status LiveFollower::CatchUp() {
  std::lock_guard<std::mutex> lock(catch_up_mu_);
  // Tenants in the order of their first move in this round; each Resync reads the registry's current
  // pointer, so applying a tenant once per round covers all of its moves in the round.
  std::vector<std::string> order;
  std::set<std::string> seen;
  absl::Status feed = absl::OkStatus();
  // The cursor (what cursor() and the gauge report) moves only once this round's moves are applied,
  // so "cursor >= seq" means the runtime serves what the registry said at seq or later.
  int64_t seq = cursor_.load();
  // Read before listing: every change up to it is then listed below (or no longer exists).
  absl::StatusOr<int64_t> head = feed_->Head();
  if (!head.ok()) feed = head.status();
  for (; feed.ok();) {
    absl::StatusOr<std::vector<storage::Change>> changes = feed_->ListChangesSince(seq, options_.batch);
    if (!changes.ok()) {
      feed = changes.status();
      break;
    }
    for (const storage::Change& c : *changes) {
      // A publish never moves a live pointer.
      if (c.kind != storage::ChangeKind::kPublish && seen.insert(c.tenant_id).second) {
        order.push_back(c.tenant_id);
      }
    }
    if (!changes->empty()) seq = changes->back().seq;
    if (static_cast<int>(changes->size()) < options_.batch) break;
  }
  if (feed.ok()) seq = std::max(seq, *head);
  if (absl::Now() >= next_retry_) {
    for (const std::string& t : retry_) {
      if (seen.insert(t).second) order.push_back(t);
    }
  }
  bool failed = false;
  for (const std::string& tenant : order) {
    absl::Status s = live_->Resync(tenant);
    if (s.ok()) {
      retry_.erase(tenant);
      continue;
    }
    retry_.insert(tenant);
    failed = true;
    LogError("could not follow a live-pointer move", {{"tenant_id", tenant}, {"error", s.ToString()}});
  }
  if (failed) next_retry_ = absl::Now() + options_.retry_interval;
  retry_pending_.store(!retry_.empty());
  const int64_t before = cursor_.exchange(seq);  // failed tenants are in retry_: moving past loses nothing
  if (seq > before && options_.on_applied) options_.on_applied(seq);
  return feed;
}

void LiveFollower::Loop() {
  absl::Time next_error_log = absl::InfinitePast();
  while (!stopping_.load()) {
    absl::StatusOr<bool> changed = feed_->WaitForChange(cursor_.load(), options_.poll);
    if (stopping_.load()) break;
    absl::Status s = changed.ok() ? absl::OkStatus() : changed.status();
    if (s.ok() && (*changed || retry_pending_.load())) s = CatchUp();
    if (!s.ok()) {
      // A feed error (database busy or unreadable) is retried next round; log it at most every 30 s.
      if (absl::Now() >= next_error_log) {
        LogError("reading the registry's change feed failed", {{"error", s.ToString()}});
        next_error_log = absl::Now() + absl::Seconds(30);
      }
      // Back off either way: a feed that keeps failing must not become a busy loop.
      absl::SleepFor(options_.poll);
    }
  }
}

}  // namespace tessera::services
