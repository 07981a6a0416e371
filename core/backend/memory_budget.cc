#include "core/backend/memory_budget.h"

#include "absl/strings/str_cat.h"

namespace tessera {

absl::Status MemoryBudget::Reserve(int64_t bytes, absl::string_view what) {
  int64_t used = in_use_.load(std::memory_order_relaxed);
  do {
    if (bytes > limit_ - used) {
      return absl::ResourceExhaustedError(absl::StrCat(what, ": ", bytes, " more bytes would exceed this backend's memory limit of ",
                                                       limit_, " bytes (", used, " in use)"));
    }
  } while (!in_use_.compare_exchange_weak(used, used + bytes, std::memory_order_relaxed));
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<void>> MemoryBudget::Lease(const std::shared_ptr<MemoryBudget>& budget,
                                                          int64_t bytes, absl::string_view what) {
  if (budget == nullptr || bytes == 0) return std::shared_ptr<void>();
  if (absl::Status s = budget->Reserve(bytes, what); !s.ok()) return s;
  return std::shared_ptr<void>(nullptr, [budget, bytes](void*) { budget->Release(bytes); });
}

}  // namespace tessera
