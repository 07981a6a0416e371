#include "core/util/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "core/util/thread_budget.h"

namespace tessera {
namespace {

thread_local bool tls_in_worker = false;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// How long a worker (or a region's caller) polls before it blocks on its condition variable (parallel.h).
constexpr int64_t kDefaultSpinNanos = 200'000;
int64_t SpinNanos() {
  if (const char* env = std::getenv("TESSERA_POOL_SPIN_US"); env != nullptr && *env != '\0') {
    return std::max<int64_t>(0, static_cast<int64_t>(std::atof(env) * 1000));
  }
  return kDefaultSpinNanos;
}

// One parallel region: lives on its caller's stack for the duration of Run. Workers reach it only through
// `region_` under `mu_` and count themselves in `active`; Run returns only when every chunk is done AND
// no worker still holds the region. (The first version kept fn/chunks/next in the pool itself: a worker
// finishing region G could read region G+1's counters, run a chunk twice or call a function whose frame
// had returned. ThreadSanitizer found it under the server's concurrent jobs; it crashed once in 20 runs.)
struct Region {
  const std::function<void(int64_t)>* fn = nullptr;
  std::atomic<bool> finished{false};  // pending == 0 && active == 0, set under ThreadPool::mu_ (spin hint)
  int64_t chunks = 0;
  std::atomic<int64_t> next{0};
  int64_t pending = 0;  // chunks not finished, under ThreadPool::mu_
  int active = 0;       // workers inside this region, under ThreadPool::mu_
};

class ThreadPool {
 public:
  explicit ThreadPool(int n) {
    for (int i = 0; i < n - 1; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  }
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn with no region running (parallel.h).
  void Exclusive(const std::function<void()>& fn) {
    std::lock_guard<std::mutex> run_lock(run_mu_);
    exclusive_.store(true, std::memory_order_relaxed);  // spinning workers yield their cores to fn's threads
    tls_in_worker = true;  // a ParallelFor or RunExclusive inside fn runs inline (no self-deadlock)
    fn();
    tls_in_worker = false;
    exclusive_.store(false, std::memory_order_relaxed);
  }

  // Runs fn(chunk) for chunk in [0, chunks); the caller participates.
  void Run(int64_t chunks, const std::function<void(int64_t)>& fn) {
    std::unique_lock<std::mutex> run_lock(run_mu_);  // one parallel region at a time
    Region region;
    region.fn = &fn;
    region.chunks = chunks;
    region.pending = chunks;
    {
      std::lock_guard<std::mutex> lock(mu_);
      region_ = &region;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    const bool was_in_worker = tls_in_worker;
    tls_in_worker = true;  // nested ParallelFor from fn runs inline instead of re-entering the pool
    Drain(region);
    tls_in_worker = was_in_worker;
    SpinWhile([&] { return !region.finished.load(std::memory_order_acquire); });
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return region.pending == 0 && region.active == 0; });
    region_ = nullptr;
  }

 private:
  void Drain(Region& r) {
    for (;;) {
      const int64_t c = r.next.fetch_add(1);
      if (c >= r.chunks) return;
      (*r.fn)(c);
      std::lock_guard<std::mutex> lock(mu_);
      if (--r.pending == 0) FinishIfDoneLocked(r);
    }
  }
  // Under mu_.
  void FinishIfDoneLocked(Region& r) {
    if (r.pending != 0 || r.active != 0) return;
    r.finished.store(true, std::memory_order_release);
    done_cv_.notify_all();
  }
  // Polls `busy` for up to spin_ns_ before the caller falls back to its blocking wait (which re-checks
  // the real condition under mu_, so the spin only changes how fast a wait ends, never what it sees).
  template <typename Busy>
  void SpinWhile(Busy busy) const {
    if (spin_ns_ <= 0) return;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(spin_ns_);
    while (busy()) {
      for (int i = 0; i < 32; ++i) CpuRelax();
      if (std::chrono::steady_clock::now() >= deadline) return;
    }
  }
  void WorkerLoop() {
    tls_in_worker = true;
    uint64_t seen = 0;
    for (;;) {
      Region* r = nullptr;
      SpinWhile([&] {
        return generation_.load(std::memory_order_acquire) == seen && !stop_.load() &&
               !exclusive_.load(std::memory_order_relaxed);
      });
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || (generation_ != seen && region_ != nullptr); });
        if (stop_) return;
        seen = generation_;
        r = region_;
        ++r->active;
      }
      Drain(*r);
      std::lock_guard<std::mutex> lock(mu_);
      --r->active;
      FinishIfDoneLocked(*r);
    }
  }

  std::vector<std::thread> workers_;
  std::mutex run_mu_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  Region* region_ = nullptr;  // the running region, under mu_
  // Written under mu_ (so a waiter on cv_ cannot miss them), atomic so that spinning workers read them too.
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> exclusive_{false};    // an Exclusive call runs (its own threads need the cores)
  int64_t spin_ns_ = SpinNanos();
};

ThreadPool& Pool() {
  static ThreadPool* pool = new ThreadPool(ThreadBudget());  // never destroyed: safe at exit
  return *pool;
}

}  // namespace

int NumThreads() { return Pool().size(); }

void RunExclusive(const std::function<void()>& fn) {
  if (tls_in_worker || NumThreads() == 1) {  // inside a region, or no region can ever run beside fn
    fn();
    return;
  }
  Pool().Exclusive(fn);
}

void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int threads = NumThreads();
  if (tls_in_worker || threads == 1 || n <= grain) {
    fn(0, n);
    return;
  }
  const int64_t chunks = std::min<int64_t>((n + grain - 1) / grain, int64_t{threads} * 4);
  const int64_t step = (n + chunks - 1) / chunks;
  Pool().Run(chunks, [&](int64_t c) {
    const int64_t b = c * step;
    const int64_t e = std::min(n, b + step);
    if (b < e) fn(b, e);
  });
}

}  // namespace tessera
