#include "core/util/parallel.h"

#include <atomic>
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

}  // namespace
}  // namespace tessera
