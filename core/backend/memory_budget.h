// MemoryBudget: a cap on the bytes one backend has allocated and not yet freed.
//
// Why: training jobs and serving share one device. A job given a budget (tessera-server
// --train-memory-limit-bytes) fails with RESOURCE_EXHAUSTED when it would go past it, instead of taking
// the memory serving needs to admit requests and load tenant versions; it is the same error a real
// out-of-memory gives, so the job fails cleanly and the server keeps serving either way.
// Memory contract: every tensor a budgeted backend allocates holds a reference to its budget and gives
// its bytes back when its memory is freed, so tensors may outlive the backend. Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tessera {

class MemoryBudget {
 public:
  explicit MemoryBudget(int64_t limit_bytes) : limit_(limit_bytes) {}

  // Takes `bytes` from the budget, or RESOURCE_EXHAUSTED (naming `what`, the limit and the bytes in use)
  // when that would exceed the limit; nothing is taken then.
  absl::Status Reserve(int64_t bytes, absl::string_view what);
  void Release(int64_t bytes) { in_use_.fetch_sub(bytes, std::memory_order_relaxed); }
  // Reserve as an owned charge: `budget` null gives a null lease (no cap); otherwise the bytes are given
  // back when the lease (shared by whatever holds the memory, e.g. a tensor's deleter) is destroyed.
  static absl::StatusOr<std::shared_ptr<void>> Lease(const std::shared_ptr<MemoryBudget>& budget, int64_t bytes,
                                                     absl::string_view what);

  int64_t limit() const { return limit_; }
  int64_t in_use() const { return in_use_.load(std::memory_order_relaxed); }

 private:
  const int64_t limit_;
  std::atomic<int64_t> in_use_{0};
};

}  // namespace tessera
