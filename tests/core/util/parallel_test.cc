#include "core/util/parallel.h"

#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace tessera {
namespace {

TEST(ParallelForTest, CoversEveryIndexExactlyOnce) {
  for (int64_t n : {0, 1, 7, 1000, 100003}) {
    std::vector<std::atomic<int>> hits(n);
    ParallelFor(n, 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
  }
}

TEST(ParallelForTest, NestedCallsRunInlineWithoutDeadlock) {
  std::atomic<int64_t> sum{0};
  ParallelFor(64, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      ParallelFor(10, 1, [&](int64_t b2, int64_t e2) { sum.fetch_add(e2 - b2); });
    }
  });
  EXPECT_EQ(sum.load(), 640);
}

TEST(ParallelForTest, ConcurrentCallersAndBackToBackRegionsStayExact) {
  // The server runs inference and training jobs on threads of their own, all using the one pool, with
  // many tiny regions in a row. A worker still finishing region G must never take work of (or signal
  // completion for) region G + 1, whose function lives on another caller's stack. Each region here
  // checks it saw every index exactly once; a stale worker shows up as a wrong count or a crash.
  constexpr int kCallers = 4, kRegions = 3000;
  std::atomic<int> failures{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < kCallers; ++t) {
    callers.emplace_back([&, t] {
      for (int r = 0; r < kRegions; ++r) {
        const int64_t n = 3 + (r * 7 + t) % 61;
        std::vector<int> hits(n, 0);
        std::atomic<int64_t> sum{0};
        ParallelFor(n, 1, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) {
            ++hits[i];
            sum.fetch_add(i);
          }
        });
        int64_t want = n * (n - 1) / 2;
        bool ok = sum.load() == want;
        for (int h : hits) ok = ok && h == 1;
        if (!ok) failures.fetch_add(1);
      }
    });
  }
  for (auto& c : callers) c.join();
  EXPECT_EQ(failures.load(), 0);
}

// A call that brings its own threads (a threaded BLAS product) must not run while a region of another
// thread runs: together they would put 2N busy threads on the budget's N cores.
TEST(RunExclusiveTest, NeverOverlapsARegionOfAnotherThread) {
  if (NumThreads() < 2) GTEST_SKIP() << "one thread: no region runs beside a call";
  std::atomic<int> in_region{0};
  std::atomic<bool> stop{false};
  std::thread regions([&] {
    while (!stop.load()) {
      ParallelFor(NumThreads(), 1, [&](int64_t, int64_t) {
        in_region.fetch_add(1);
        std::this_thread::sleep_for(std::chrono::microseconds(300));
        in_region.fetch_sub(1);
      });
    }
  });
  int overlaps = 0, runs = 0;
  for (int i = 0; i < 40; ++i) {
    RunExclusive([&] {
      ++runs;
      for (int j = 0; j < 4; ++j) {
        if (in_region.load() != 0) ++overlaps;
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
    });
  }
  stop.store(true);
  regions.join();
  EXPECT_EQ(runs, 40);
  EXPECT_EQ(overlaps, 0);
}

TEST(RunExclusiveTest, NestedParallelWorkInsideItRunsInline) {
  std::atomic<int64_t> sum{0};
  int nested = 0;
  RunExclusive([&] {
    ParallelFor(100, 1, [&](int64_t b, int64_t e) { sum.fetch_add(e - b); });  // no self-deadlock
    RunExclusive([&] { ++nested; });
  });
  EXPECT_EQ(sum.load(), 100);
  EXPECT_EQ(nested, 1);
}

TEST(RunExclusiveTest, RunsInlineInsideARegion) {
  std::atomic<int> ran{0};
  ParallelFor(8, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) RunExclusive([&] { ran.fetch_add(1); });  // no self-deadlock
  });
  EXPECT_EQ(ran.load(), 8);
}

double ProcessCpuSeconds() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// Workers spin briefly between regions (parallel.cc: a wake-up costs tens of microseconds), then sleep:
// an idle process must not burn its cores.
TEST(ParallelForTest, IdleWorkersSleepAfterTheirSpin) {
  std::atomic<int64_t> sum{0};
  for (int r = 0; r < 100; ++r) ParallelFor(64, 1, [&](int64_t b, int64_t e) { sum.fetch_add(e - b); });
  EXPECT_EQ(sum.load(), 6400);
  const double before = ProcessCpuSeconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const double idle_cpu = ProcessCpuSeconds() - before;
  EXPECT_LT(idle_cpu, 0.04) << "idle pool workers used " << idle_cpu << " s of CPU in 0.2 s";
}

}  // namespace
}  // namespace tessera
