// The process's compute thread budget (see thread_budget.h).
#include "core/util/thread_budget.h"

#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace tessera {
namespace {

struct Budget {
  std::mutex mu;
  int threads = 0;      // 0 until chosen
  bool fixed = false;   // used by the pool or the BLAS: no longer changes
  const char* source = "";
};

Budget& State() {
  static Budget* b = new Budget;  // never destroyed: read by threads that may outlive static destruction
  return *b;
}

int CpusAvailable() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

// Under b.mu: chooses the budget if nothing did yet.
void ChooseLocked(Budget& b) {
  if (b.threads > 0) return;
  int n = 0;
  if (const char* env = std::getenv("TESSERA_NUM_THREADS"); env != nullptr && absl::SimpleAtoi(env, &n) && n > 0) {
    b.threads = n;
    b.source = "TESSERA_NUM_THREADS";
    return;
  }
  b.threads = CpusAvailable();
  b.source = "the CPU set";
}

}  // namespace

absl::Status SetThreadBudget(int n) {
  if (n < 1) return absl::InvalidArgumentError(absl::StrCat("--threads must be >= 1, got ", n));
  Budget& b = State();
  std::lock_guard<std::mutex> lock(b.mu);
  if (b.fixed && b.threads != n) {
    return absl::FailedPreconditionError(absl::StrCat("the thread budget is already in use at ", b.threads,
                                                      " threads (from ", b.source, "); set it before any compute"));
  }
  b.threads = n;
  b.source = "--threads";
  return absl::OkStatus();
}

int ThreadBudget() {
  Budget& b = State();
  std::lock_guard<std::mutex> lock(b.mu);
  ChooseLocked(b);
  b.fixed = true;
  return b.threads;
}

std::string ThreadBudgetString() {
  Budget& b = State();
  std::lock_guard<std::mutex> lock(b.mu);
  ChooseLocked(b);
  return absl::StrCat(b.threads, " (from ", b.source, ")");
}

}  // namespace tessera
