// ChangeWatcher: an inference replica's ChangeFeed (services/change_feed.h) over the control plane's
// watch stream (tessera.internal.v1.Changes, services/changes_service.h), so live-pointer moves are
// pushed to it instead of the replica polling the shared database.
//
// A thread keeps one Watch stream open (ADMIN key, the --control-plane address and CA), buffering the
// changes it receives; after a disconnect it reconnects with backoff (100 ms doubling to 2 s) and
// resumes after the last head it received, so nothing is missed and nothing is applied twice (the
// follower asks only for seq > its cursor). While the stream is down -- the control plane restarting,
// say -- the feed reads the registry directly (RegistryChangeFeed), so moves made meanwhile by other processes
// (a trainer's auto-promotion) still reach the replica.
// Thread-safety: all methods are thread-safe; one consumer (the LiveFollower) is expected.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "services/change_feed.h"
#include "storage/registry.h"
#include "tessera/internal/v1/changes.grpc.pb.h"

namespace tessera::services {

class ChangeWatcher final : public ChangeFeed {
 public:
  struct Options {
    absl::Duration reconnect_min = absl::Milliseconds(100);
    absl::Duration reconnect_max = absl::Seconds(2);
  };
  // `channel` to the control plane's gRPC port (`target` names it in logs); `registry` (not owned) is
  // read while the stream is down. Watches changes with seq > from_seq.
  ChangeWatcher(std::shared_ptr<grpc::Channel> channel, std::string target, std::string admin_key,
                storage::Registry* registry, int64_t from_seq, Options options);
  ChangeWatcher(std::shared_ptr<grpc::Channel> channel, std::string target, std::string admin_key,
                storage::Registry* registry, int64_t from_seq)
      : ChangeWatcher(std::move(channel), std::move(target), std::move(admin_key), registry, from_seq, Options()) {}
  ~ChangeWatcher() override;

  void Start();
  void Stop();

  absl::StatusOr<std::vector<storage::Change>> ListChangesSince(int64_t after_seq, int limit) override;
  absl::StatusOr<int64_t> Head() override;
  absl::StatusOr<bool> WaitForChange(int64_t after_seq, absl::Duration timeout) override;

  bool connected() const;
  int64_t connects() const { return connects_.load(); }  // streams opened that delivered a batch

 private:
  void Loop();

  std::unique_ptr<internal::v1::Changes::Stub> stub_;
  const std::string target_;
  const std::string admin_key_;
  RegistryChangeFeed fallback_;
  const Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<storage::Change> buffer_;  // received, seq ascending, not yet passed by the consumer
  int64_t head_;                        // every change <= head_ has been received
  bool connected_ = false;
  bool stopping_ = false;
  grpc::ClientContext* ctx_ = nullptr;  // the open stream's, to cancel it on Stop
  std::atomic<int64_t> connects_{0};
  std::thread thread_;
};

}  // namespace tessera::services
