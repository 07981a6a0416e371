// ChangeFeed: where a LiveFollower (services/live_follower.h) reads the registry's change feed from.
// The registry itself (RegistryChangeFeed: role all, or any process without a control plane to watch),
// or the control plane's watch stream (services/change_watcher.h: inference replicas), which pushes
// changes instead of every replica polling the shared database.
//
// Contract: ListChangesSince returns changes with seq > after_seq in seq order (at most `limit`, <= 0
// all). Head() is a sequence such that every change with seq <= Head() has been or can be listed; it
// may exceed the last listed seq (rows of a deleted tenant are gone), so a follower advances its cursor
// to it. WaitForChange returns true once Head() > after_seq, false after `timeout`.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "storage/registry.h"

namespace tessera::services {

class ChangeFeed {
 public:
  virtual ~ChangeFeed() = default;
  virtual absl::StatusOr<std::vector<storage::Change>> ListChangesSince(int64_t after_seq, int limit) = 0;
  virtual absl::StatusOr<int64_t> Head() = 0;
  virtual absl::StatusOr<bool> WaitForChange(int64_t after_seq, absl::Duration timeout) = 0;
};

class RegistryChangeFeed final : public ChangeFeed {
 public:
  explicit RegistryChangeFeed(storage::Registry* registry) : registry_(registry) {}
  absl::StatusOr<std::vector<storage::Change>> ListChangesSince(int64_t after_seq, int limit) override {
    return registry_->ListChangesSince(after_seq, limit);
  }
  absl::StatusOr<int64_t> Head() override { return registry_->ChangeSequence(); }
  absl::StatusOr<bool> WaitForChange(int64_t after_seq, absl::Duration timeout) override {
    return registry_->WaitForChange(after_seq, timeout);
  }

 private:
  storage::Registry* registry_;
};

}  // namespace tessera::services
