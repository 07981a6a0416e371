#include "services/changes_service.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/change_convert.h"
#include "services/log.h"

namespace tessera::services {

ChangesService::ChangesService(const ServiceEnv& env, Options options) : env_(env), options_(options) {
  if (options_.batch < 1) options_.batch = 1;
}

int64_t ChangesService::StartHeadWatcher() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!head_thread_.joinable() && !stopping_) {
    absl::StatusOr<int64_t> head = env_.registry->ChangeSequence();
    head_ = head.ok() ? *head : 0;
    head_thread_ = std::thread([this] { WatchHead(); });
  }
  return head_;
}

ChangesService::~ChangesService() { Stop(); }

void ChangesService::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (head_thread_.joinable()) head_thread_.join();
}

void ChangesService::WatchHead() {
  absl::Time next_error_log = absl::InfinitePast();
  for (;;) {
    int64_t known;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      known = head_;
    }
    // Returns within 250 ms either way, so Stop is prompt.
    absl::StatusOr<bool> moved = env_.registry->WaitForChange(known, absl::Milliseconds(250));
    absl::StatusOr<int64_t> head = moved.ok() ? env_.registry->ChangeSequence() : moved.status();
    if (!head.ok()) {
      if (absl::Now() >= next_error_log) {
        LogError("watching the registry's change feed failed", {{"error", head.status().ToString()}});
        next_error_log = absl::Now() + absl::Seconds(30);
      }
      absl::SleepFor(absl::Milliseconds(250));
      continue;
    }
    if (*head != known) {
      std::lock_guard<std::mutex> lock(mu_);
      head_ = std::max(head_, *head);
      cv_.notify_all();
    }
  }
}

bool ChangesService::Stopping() {
  std::lock_guard<std::mutex> lock(mu_);
  return stopping_;
}

int64_t ChangesService::WaitBeyond(int64_t after, absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] { return stopping_ || head_ > after; });
  return head_;
}

grpc::ServerWriteReactor<internal::v1::ChangeBatch>* ChangesService::Watch(
    grpc::CallbackServerContext* ctx, const internal::v1::WatchChangesRequest* req) {
  const ServiceEnv& env = env_;
  constexpr char kMethod[] = "Changes/Watch";
  using Batch = internal::v1::ChangeBatch;
  absl::StatusOr<storage::Principal> p = env.auth->AuthorizeAdmin(*ctx);
  if (!p.ok()) return new RejectedWriter<Batch>(env, kMethod, p.status());
  if (req->after_seq() < 0) {
    return new RejectedWriter<Batch>(
        env, kMethod, absl::InvalidArgumentError(absl::StrCat("after_seq: must be >= 0, got ", req->after_seq())));
  }
  if (Stopping()) {
    return new RejectedWriter<Batch>(
        env, kMethod, absl::UnavailableError("the control plane is shutting down; watch again to resume (after_seq)"));
  }
  absl::StatusOr<std::shared_ptr<StreamSlot>> acquired = AcquireStreamSlot(env, "(replicas)", "Changes/Watch");
  if (!acquired.ok()) return new RejectedWriter<Batch>(env, kMethod, acquired.status());
  std::shared_ptr<StreamSlot> slot = *std::move(acquired);
  const int64_t first_head = StartHeadWatcher();
  return new ThreadedWriter<Batch>(env, kMethod, [this, &env, req, slot, first_head](ThreadedWriter<Batch>* w) -> absl::Status {
    int64_t after = req->after_seq();
    // The head watcher's, read from the registry before the listing below: every change up to it is in
    // that listing or no longer exists. Nothing is read while it has not moved past `after`.
    int64_t head = first_head;
    absl::Time last_write = absl::InfinitePast();  // the first round always writes (the client learns the head)
    for (;;) {
      if (Stopping() || (env.shutting_down != nullptr && env.shutting_down->load())) {
        return absl::UnavailableError("the control plane is shutting down; watch again to resume (after_seq)");
      }
      Batch batch;
      int64_t reached = after;
      bool full = false;
      if (head > after) {
        absl::StatusOr<std::vector<storage::Change>> changes = env.registry->ListChangesSince(after, options_.batch);
        if (!changes.ok()) return changes.status();
        full = static_cast<int>(changes->size()) == options_.batch;
        for (const storage::Change& c : *changes) ToProto(c, batch.add_changes());
        reached = full ? changes->back().seq : std::max(head, changes->empty() ? after : changes->back().seq);
      }
      batch.set_head_seq(reached);
      if (reached > after || absl::Now() - last_write >= options_.keepalive) {
        if (!w->Write(batch)) return absl::CancelledError("the replica went away");
        last_write = absl::Now();
        after = reached;
      }
      if (full) continue;
      head = WaitBeyond(after, absl::Seconds(1));
      if (w->cancelled()) return absl::CancelledError("the replica went away");
    }
  });
}

}  // namespace tessera::services
