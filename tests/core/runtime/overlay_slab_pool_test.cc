// core/runtime/overlay_slab_pool: one allocation carved into per-slot slabs that return when the last
// view of them goes; and the overlay cache placing loads in the pool, returning slabs on eviction once
// no request holds the overlay, and overflowing to plain allocations (counted) instead of failing.
#include "core/runtime/overlay_slab_pool.h"

#include <set>

#include "core/runtime/overlay_cache.h"
#include "gtest/gtest.h"
#include "tests/core/runtime/runtime_test_util.h"

namespace tessera::runtime {
namespace {

using testing::MakeVersion;
using testing::MemorySource;
using testing::SmallConfig;

TEST(OverlaySlabPoolTest, HandsOutDisjointSlabsAndTakesThemBack) {
  const ModelConfig c = SmallConfig();
  std::unique_ptr<Backend> be = MakeCpuBackend();
  auto pool = OverlaySlabPool::Create(c, DType::kF32, 3, be.get());
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ((*pool)->slabs(), 3);
  EXPECT_EQ((*pool)->slab_bytes(), 3 * c.expert_dim * c.hidden_size * 4);
  EXPECT_EQ(OverlaySlabPool::SlotBytes(c, DType::kBF16) * 2, (*pool)->slab_bytes());

  std::vector<ExpertWeights> out;
  std::set<const void*> bases;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<ExpertWeights> w = (*pool)->Acquire();
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ(w->gate.shape(), ExpertPartShape(c, 0));
    EXPECT_EQ(w->down.shape(), ExpertPartShape(c, 2));
    // The three parts are back to back inside the slab.
    EXPECT_EQ(static_cast<const char*>(w->up.raw()), static_cast<const char*>(w->gate.raw()) + w->gate.nbytes());
    EXPECT_EQ(static_cast<const char*>(w->down.raw()), static_cast<const char*>(w->up.raw()) + w->up.nbytes());
    bases.insert(w->gate.raw());
    out.push_back(*w);
  }
  EXPECT_EQ(bases.size(), 3u);  // three different slabs
  EXPECT_EQ((*pool)->slabs_in_use(), 3);
  // Writing one slab leaves the others alone.
  ASSERT_TRUE(be->Fill(out[0].gate, 1.0f).ok());
  ASSERT_TRUE(be->Fill(out[1].gate, 2.0f).ok());
  EXPECT_EQ(be->ToHostF32(out[0].gate)->front(), 1.0f);
  absl::StatusOr<ExpertWeights> full = (*pool)->Acquire();
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);

  // A slab returns only when its last view goes.
  Tensor keep = out[1].down.Rows(0, 1);
  out[1] = ExpertWeights{};
  EXPECT_EQ((*pool)->slabs_in_use(), 3);
  keep = Tensor();
  EXPECT_EQ((*pool)->slabs_in_use(), 2);
  absl::StatusOr<ExpertWeights> again = (*pool)->Acquire();
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(bases.count(again->gate.raw()));  // a recycled slab, not new memory

  // The pool object may go first: slabs still out stay valid and are released later.
  pool->reset();
  ASSERT_TRUE(be->Fill(out[0].up, 3.0f).ok());
  EXPECT_EQ(be->ToHostF32(out[0].up)->back(), 3.0f);
}

TEST(OverlaySlabPoolTest, RejectsBadArguments) {
  const ModelConfig c = SmallConfig();
  std::unique_ptr<Backend> be = MakeCpuBackend();
  EXPECT_EQ(OverlaySlabPool::Create(c, DType::kF32, 0, be.get()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OverlaySlabPool::Create(c, DType::kI32, 2, be.get()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OverlaySlabPool::Create(c, DType::kF32, 2, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

// Versions of 2 slots each; the cache holds two of them, the pool exactly as many slabs.
TEST(OverlaySlabPoolTest, CacheLoadsIntoThePoolAndEvictionReturnsSlabs) {
  const ModelConfig c = SmallConfig();
  std::unique_ptr<Backend> be = MakeCpuBackend();
  MemorySource source;
  std::map<int64_t, testing::TestVersion> versions;
  for (int64_t v = 1; v <= 4; ++v) {
    versions[v] = MakeVersion(c, be.get(), {{0, static_cast<int32_t>(v)}, {1, static_cast<int32_t>(v)}}, 10 + v);
    source.Put("acme", v, versions[v].blob);
  }
  const int64_t slab = OverlaySlabPool::SlotBytes(c, DType::kF32);
  std::mutex device_mu;
  OverlayCache cache(c, be.get(), &source, /*capacity_bytes=*/4 * slab, &device_mu);
  std::shared_ptr<OverlaySlabPool> pool = *OverlaySlabPool::Create(c, DType::kF32, 4, be.get());
  cache.UseSlabPool(pool);

  auto v1 = cache.Acquire("acme", 1);
  auto v2 = cache.Acquire("acme", 2);
  ASSERT_TRUE(v1.ok() && v2.ok()) << v1.status() << v2.status();
  EXPECT_EQ(pool->slabs_in_use(), 4);
  OverlayCacheStats s = cache.Stats();
  EXPECT_EQ(s.pool_slabs, 4);
  EXPECT_EQ(s.pool_slabs_in_use, 4);
  // Loaded into the pool with the blob's values and identity.
  EXPECT_EQ((*v2)->digest(), versions[2].blob.sha256);
  EXPECT_EQ(*be->ToHostF32((*v2)->Find({1, 2})->up), *be->ToHostF32(versions[2].overlay->Find({1, 2})->up));

  // v3 evicts v1 (least recently used); v1 is still held here, so its slabs stay out and v3's two slots
  // overflow to plain allocations instead of failing.
  auto v3 = cache.Acquire("acme", 3);
  ASSERT_TRUE(v3.ok()) << v3.status();
  s = cache.Stats();
  EXPECT_EQ(s.pool_overflow_slots, 2);
  EXPECT_EQ(s.held_bytes, (*v1)->bytes());
  EXPECT_EQ(*be->ToHostF32((*v3)->Find({0, 3})->gate), *be->ToHostF32(versions[3].overlay->Find({0, 3})->gate));
  // The holder finishes: v1's slabs return, and the next load uses them.
  v1->reset();
  EXPECT_EQ(pool->slabs_in_use(), 2);
  v2->reset();  // still resident: the cache keeps it
  EXPECT_EQ(pool->slabs_in_use(), 2);
  auto v4 = cache.Acquire("acme", 4);  // evicts v2 (not held): its slabs return too
  ASSERT_TRUE(v4.ok());
  s = cache.Stats();
  EXPECT_EQ(s.pool_overflow_slots, 2);  // v4 fit in the pool
  EXPECT_EQ(pool->slabs_in_use(), 2);   // v4's two slabs (v3 is outside the pool)
  EXPECT_EQ(*be->ToHostF32((*v4)->Find({1, 4})->down), *be->ToHostF32(versions[4].overlay->Find({1, 4})->down));
}

}  // namespace
}  // namespace tessera::runtime
