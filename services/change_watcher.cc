#include "services/change_watcher.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/change_convert.h"
#include "services/log.h"

namespace tessera::services {

ChangeWatcher::ChangeWatcher(std::shared_ptr<grpc::Channel> channel, std::string target, std::string admin_key,
                             storage::Registry* registry, int64_t from_seq, Options options)
    : stub_(internal::v1::Changes::NewStub(std::move(channel))),
      target_(std::move(target)),
      admin_key_(std::move(admin_key)),
      fallback_(registry),
      options_(options),
      head_(from_seq) {}

ChangeWatcher::~ChangeWatcher() { Stop(); }

void ChangeWatcher::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void ChangeWatcher::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    if (ctx_ != nullptr) ctx_->TryCancel();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool ChangeWatcher::connected() const {
  std::lock_guard<std::mutex> lock(mu_);
  return connected_;
}

void ChangeWatcher::Loop() {
  absl::Duration backoff = options_.reconnect_min;
  absl::Time next_error_log = absl::InfinitePast();
  for (;;) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + admin_key_);
    internal::v1::WatchChangesRequest req;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      req.set_after_seq(head_);
      ctx_ = &ctx;
    }
    std::unique_ptr<grpc::ClientReader<internal::v1::ChangeBatch>> reader = stub_->Watch(&ctx, req);
    internal::v1::ChangeBatch batch;
    bool delivered = false;
    absl::Status broken = absl::OkStatus();
    while (broken.ok() && reader->Read(&batch)) {
      std::vector<storage::Change> changes;
      for (const internal::v1::Change& c : batch.changes()) {
        absl::StatusOr<storage::Change> change = FromProto(c);
        if (!change.ok()) {
          broken = change.status();
          break;
        }
        changes.push_back(*std::move(change));
      }
      if (!broken.ok()) break;
      std::lock_guard<std::mutex> lock(mu_);
      for (storage::Change& c : changes) {
        if (c.seq > head_) buffer_.push_back(std::move(c));
      }
      head_ = std::max(head_, batch.head_seq());
      if (!connected_) {
        connected_ = true;
        connects_.fetch_add(1);
        LogInfo("watching the control plane's change feed", {{"control_plane", target_}, {"after_seq", req.after_seq()}});
      }
      delivered = true;
      cv_.notify_all();
    }
    std::string why;
    if (broken.ok()) {
      const grpc::Status finish = reader->Finish();
      why = absl::StrCat("code ", static_cast<int>(finish.error_code()), ": ", finish.error_message());
    } else {
      ctx.TryCancel();
      (void)reader->Finish();
      why = broken.ToString();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ctx_ = nullptr;
      connected_ = false;
      cv_.notify_all();
      if (stopping_) return;
    }
    if (absl::Now() >= next_error_log) {
      LogError("the control plane's change feed stream ended; reading the registry until it is back",
               {{"control_plane", target_}, {"why", why}});
      next_error_log = absl::Now() + absl::Seconds(30);
    }
    backoff = delivered ? options_.reconnect_min : std::min(options_.reconnect_max, backoff * 2);
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, absl::ToChronoNanoseconds(backoff), [this] { return stopping_; });
  }
}

absl::StatusOr<std::vector<storage::Change>> ChangeWatcher::ListChangesSince(int64_t after_seq, int limit) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (connected_) {
      // The consumer has applied everything up to after_seq: drop it.
      while (!buffer_.empty() && buffer_.front().seq <= after_seq) buffer_.pop_front();
      std::vector<storage::Change> out;
      for (const storage::Change& c : buffer_) {
        if (limit > 0 && static_cast<int>(out.size()) >= limit) break;
        out.push_back(c);
      }
      return out;
    }
  }
  return fallback_.ListChangesSince(after_seq, limit);
}

absl::StatusOr<int64_t> ChangeWatcher::Head() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (connected_) return head_;
  }
  return fallback_.Head();
}

absl::StatusOr<bool> ChangeWatcher::WaitForChange(int64_t after_seq, absl::Duration timeout) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (connected_) {
      // Wakes early when the stream drops: the rest of the wait is the registry's.
      cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] { return stopping_ || head_ > after_seq || !connected_; });
      if (connected_ || head_ > after_seq) return head_ > after_seq;
    }
  }
  return fallback_.WaitForChange(after_seq, timeout);
}

}  // namespace tessera::services
