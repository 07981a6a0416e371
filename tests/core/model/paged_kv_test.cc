// Paged KV memory (core/model/kv_block_pool.h, KvCache::CreatePaged): the pool hands out blocks all or
// none and reuses freed ones, counts references to shared blocks, asks its reclaimer when short, and
// copies a shared block before a cache writes into it; a paged cache reserves blocks on demand, maps positions to storage rows
// through its block table and gives the blocks back; and Model::Forward over paged caches -- block
// tables deliberately fragmented -- produces exactly the logits of contiguous caches, step for step.
#include <memory>
#include <tuple>
#include <vector>

#include "core/model/config.h"
#include "core/model/kv_block_pool.h"
#include "core/model/kv_cache.h"
#include "core/model/model.h"
#include "core/model/weights.h"
#include "gtest/gtest.h"
#include "tests/core/model/random_overlay.h"
#include "tests/core/model/reference_model.h"

namespace tessera {
namespace {

using testing::RandomTokens;
using testing::SmallConfig;

TEST(KvBlockPool, AllocatesAllOrNothingAndReusesFreedBlocks) {
  std::unique_ptr<Backend> be = MakeCpuBackend();
  const ModelConfig c = SmallConfig(ModelFamily::kMixtral);
  std::unique_ptr<KvBlockPool> pool = KvBlockPool::Create(c, 5, 4, be.get()).value();
  EXPECT_EQ(pool->free_blocks(), 5);
  EXPECT_EQ(pool->block_bytes(), 4 * KvCache::BytesPerPosition(c, DType::kF32));
  EXPECT_EQ(pool->bytes(), 5 * pool->block_bytes());
  EXPECT_EQ(pool->k(0).dim(0), 20);

  std::vector<int32_t> a, b;
  ASSERT_TRUE(pool->Allocate(3, &a));
  EXPECT_EQ(a, (std::vector<int32_t>{0, 1, 2}));  // a fresh pool hands out ascending blocks
  EXPECT_FALSE(pool->Allocate(3, &b));            // only 2 left: none taken
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(pool->free_blocks(), 2);
  ASSERT_TRUE(pool->Allocate(2, &b));
  EXPECT_EQ(pool->free_blocks(), 0);
  pool->Free(a);
  EXPECT_EQ(pool->free_blocks(), 3);
  std::vector<int32_t> again;
  ASSERT_TRUE(pool->Allocate(3, &again));
  EXPECT_EQ(again, a);  // freed blocks come back in their order

  EXPECT_EQ(KvBlockPool::Create(c, 0, 4, be.get()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KvBlockPool::Create(c, 4, 0, be.get()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KvBlockPool::Create(c, 4, 4, be.get(), DType::kI32).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvBlockPool, SharedBlocksAreFreedByTheirLastHolder) {
  std::unique_ptr<Backend> be = MakeCpuBackend();
  const ModelConfig c = SmallConfig(ModelFamily::kMixtral);
  std::unique_ptr<KvBlockPool> pool = KvBlockPool::Create(c, 4, 4, be.get()).value();
  std::vector<int32_t> a;
  ASSERT_TRUE(pool->Allocate(2, &a));
  EXPECT_EQ(pool->refs(a[0]), 1);
  pool->Share(a);
  pool->Share({&a[0], 1});
  EXPECT_EQ(pool->refs(a[0]), 3);
  EXPECT_EQ(pool->refs(a[1]), 2);
  pool->Free(a);
  EXPECT_EQ(pool->free_blocks(), 2);  // both still held
  EXPECT_EQ(pool->refs(a[0]), 2);
  EXPECT_EQ(pool->refs(a[1]), 1);
  pool->Free(a);
  EXPECT_EQ(pool->free_blocks(), 3);  // a[1]'s last reference went
  EXPECT_EQ(pool->refs(a[1]), 0);
  pool->Free({&a[0], 1});
  EXPECT_EQ(pool->free_blocks(), 4);
}

// Holds blocks it gives back on demand, like the prefix cache.
class HoldingReclaimer : public KvBlockReclaimer {
 public:
  explicit HoldingReclaimer(KvBlockPool* pool) : pool_(pool) {}
  // Takes over the blocks the caller allocated: its own reference for the caller's.
  void Hold(const std::vector<int32_t>& blocks) {
    pool_->Share(blocks, KvBlockHolder::kReclaimer);
    pool_->Free(blocks);
    held.insert(held.end(), blocks.begin(), blocks.end());
  }
  int64_t ReclaimBlocks(int64_t n) override {
    calls += 1;
    int64_t freed = 0;
    for (; freed < n && !held.empty(); ++freed) {
      pool_->Free({&held.back(), 1}, KvBlockHolder::kReclaimer);
      held.pop_back();
    }
    return freed;
  }
  std::vector<int32_t> held;
  int calls = 0;

 private:
  KvBlockPool* pool_;
};

// A pool of `num_blocks` blocks of 4 positions and a HoldingReclaimer over it (not yet the pool's).
struct PoolAndReclaimer {
  explicit PoolAndReclaimer(int64_t num_blocks)
      : be(MakeCpuBackend()),
        pool(KvBlockPool::Create(SmallConfig(ModelFamily::kMixtral), num_blocks, 4, be.get()).value()),
        reclaimer(pool.get()) {}
  std::unique_ptr<Backend> be;
  std::unique_ptr<KvBlockPool> pool;
  HoldingReclaimer reclaimer;
};

TEST(KvBlockPool, AsksItsReclaimerForWhatIsMissing) {
  PoolAndReclaimer p(5);
  KvBlockPool* pool = p.pool.get();
  HoldingReclaimer& r = p.reclaimer;
  std::vector<int32_t> cached;
  ASSERT_TRUE(pool->Allocate(3, &cached));
  r.Hold(cached);
  pool->SetReclaimer(&r);
  EXPECT_EQ(pool->free_blocks(), 2);
  EXPECT_EQ(pool->available_blocks(), 5);
  std::vector<int32_t> got;
  ASSERT_TRUE(pool->Allocate(2, &got));  // enough free: the reclaimer is not asked
  EXPECT_EQ(r.calls, 0);
  ASSERT_TRUE(pool->Allocate(2, &got));  // two short: it gives back exactly two
  EXPECT_EQ(r.calls, 1);
  EXPECT_EQ(r.held.size(), 1u);
  EXPECT_FALSE(pool->Allocate(2, &got));  // it has one: still short, nothing taken
  EXPECT_EQ(got.size(), 4u);
  pool->SetReclaimer(nullptr);
  EXPECT_EQ(pool->available_blocks(), pool->free_blocks());
}

// The pool counts the blocks only its reclaimer holds as references change, so admission's
// available_blocks() never asks the reclaimer.
TEST(KvBlockPool, CountsBlocksOnlyTheReclaimerHolds) {
  PoolAndReclaimer p(6);
  KvBlockPool* pool = p.pool.get();
  std::vector<int32_t> seq;
  ASSERT_TRUE(pool->Allocate(3, &seq));
  pool->Share(seq, KvBlockHolder::kReclaimer);  // cached while the sequence still runs
  EXPECT_EQ(pool->reclaimable_blocks(), 0);
  EXPECT_EQ(pool->available_blocks(), 3);
  pool->Free({&seq[0], 1});  // the sequence lets go of its first block: only the cache holds it
  EXPECT_EQ(pool->reclaimable_blocks(), 1);
  EXPECT_EQ(pool->available_blocks(), 3);  // no reclaimer set: cached blocks are not available
  pool->SetReclaimer(&p.reclaimer);
  EXPECT_EQ(pool->available_blocks(), 4);
  pool->Share({&seq[0], 1});  // a new sequence adopts it
  EXPECT_EQ(pool->reclaimable_blocks(), 0);
  pool->Free(seq);  // both sequences are done with every block
  EXPECT_EQ(pool->reclaimable_blocks(), 3);
  EXPECT_EQ(pool->free_blocks(), 3);
  EXPECT_EQ(pool->available_blocks(), 6);
  pool->Free(seq, KvBlockHolder::kReclaimer);  // the cache evicts them
  EXPECT_EQ(pool->reclaimable_blocks(), 0);
  EXPECT_EQ(pool->free_blocks(), 6);
  pool->SetReclaimer(nullptr);
}

// A cache that adopted shared blocks writes into its own copy of the block holding its next position; the
// other holder's rows stay as they were, bit for bit.
TEST(PagedKvCache, WritesCopySharedBlocksFirst) {
  std::unique_ptr<Backend> be = MakeCpuBackend();
  const ModelConfig c = SmallConfig(ModelFamily::kMixtral);
  std::unique_ptr<Model> m = Model::Create(c, ModelWeights::RandomInit(c, 11, be.get()).value(), be.get()).value();
  std::unique_ptr<KvBlockPool> pool = KvBlockPool::Create(c, 8, 4, be.get()).value();
  std::unique_ptr<KvCache> a = KvCache::CreatePaged(pool.get(), 32).value();
  const std::vector<int32_t> prompt = RandomTokens(8, c.vocab_size, 3);
  SequenceInput in_a[1] = {{prompt, nullptr, a.get()}};
  ASSERT_TRUE(m->Forward(in_a).ok());
  ASSERT_EQ(a->blocks().size(), 2u);
  auto rows = [&](const KvCache& kv, int64_t n) {
    std::vector<float> out;
    for (int64_t l = 0; l < c.num_layers; ++l) {
      for (const Tensor* t : {&kv.k(l), &kv.v(l)}) {
        for (const KvSegment& seg : kv.Segments(0, n)) {
          std::vector<float> r = be->ToHostF32(t->Rows(seg.row, seg.count)).value();
          out.insert(out.end(), r.begin(), r.end());
        }
      }
    }
    return out;
  };
  const std::vector<float> before = rows(*a, 8);

  // b takes both blocks but keeps only 7 positions: its next write lands in the shared second block.
  std::unique_ptr<KvCache> b = KvCache::CreatePaged(pool.get(), 32).value();
  std::vector<int32_t> shared(a->blocks().begin(), a->blocks().end());
  pool->Share(shared);
  ASSERT_TRUE(b->AdoptBlocks(shared, 7).ok());
  EXPECT_EQ(b->length(), 7);
  EXPECT_EQ(pool->refs(shared[1]), 2);
  EXPECT_EQ(b->BlocksToCopyBeforeWrite(), 1);  // the second block; the first lies below the write
  EXPECT_EQ(a->BlocksToCopyBeforeWrite(), 0);  // a's writes start at position 8, past both blocks
  EXPECT_EQ(b->pool(), pool.get());
  const int64_t free_before = pool->free_blocks();
  const std::vector<int32_t> other = RandomTokens(3, c.vocab_size, 4);
  SequenceInput in_b[1] = {{other, nullptr, b.get()}};
  ASSERT_TRUE(m->Forward(in_b).ok());
  EXPECT_EQ(b->length(), 10);
  EXPECT_EQ(b->blocks()[0], shared[0]);  // below the write: still shared
  EXPECT_NE(b->blocks()[1], shared[1]);  // copied before the write
  EXPECT_EQ(pool->refs(shared[0]), 2);
  EXPECT_EQ(pool->refs(shared[1]), 1);
  EXPECT_EQ(b->BlocksToCopyBeforeWrite(), 0);
  EXPECT_EQ(pool->free_blocks(), free_before - 2);  // the copy, and a third block for positions 8-9
  EXPECT_EQ(rows(*a, 8), before);                   // a's rows untouched
  // b's first 7 positions are a's.
  const std::vector<float> b_rows = rows(*b, 7), a_rows = rows(*a, 7);
  EXPECT_EQ(b_rows, a_rows);

  // Adopting into a cache that is not empty, or beyond the blocks, is refused (and drops the references).
  pool->Share({&shared[0], 1});
  EXPECT_EQ(b->AdoptBlocks({shared[0]}, 4).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool->refs(shared[0]), 2);
  std::unique_ptr<KvCache> d = KvCache::CreatePaged(pool.get(), 32).value();
  pool->Share({&shared[0], 1});
  EXPECT_EQ(d->AdoptBlocks({shared[0]}, 5).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool->refs(shared[0]), 2);
}

TEST(PagedKvCache, ReservesOnDemandMapsPositionsAndGivesBlocksBack) {
  std::unique_ptr<Backend> be = MakeCpuBackend();
  const ModelConfig c = SmallConfig(ModelFamily::kMixtral);
  std::unique_ptr<KvBlockPool> pool = KvBlockPool::Create(c, 6, 4, be.get()).value();
  std::unique_ptr<KvCache> x = KvCache::CreatePaged(pool.get(), 20).value();
  std::unique_ptr<KvCache> y = KvCache::CreatePaged(pool.get(), 20).value();
  EXPECT_TRUE(x->paged());
  EXPECT_EQ(x->reserved(), 0);
  EXPECT_EQ(x->bytes(), 0);

  // Interleaved growth: x gets blocks 0 and 2, y gets 1.
  ASSERT_TRUE(x->Reserve(3).ok());
  ASSERT_TRUE(y->Reserve(4).ok());
  ASSERT_TRUE(x->Reserve(5).ok());
  EXPECT_EQ(x->blocks(), (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(y->blocks(), (std::vector<int32_t>{1}));
  EXPECT_EQ(x->reserved(), 8);
  EXPECT_EQ(x->bytes(), 2 * pool->block_bytes());
  ASSERT_TRUE(x->Reserve(8).ok());  // already held: nothing taken
  EXPECT_EQ(pool->free_blocks(), 3);

  // Positions 2..6 of x: rows 2..3 of block 0, then rows 8..10 of block 2.
  const std::vector<KvSegment> segs = x->Segments(2, 7);
  ASSERT_EQ(segs.size(), 2u);
  EXPECT_EQ(segs[0].position, 2);
  EXPECT_EQ(segs[0].row, 2);
  EXPECT_EQ(segs[0].count, 2);
  EXPECT_EQ(segs[1].position, 4);
  EXPECT_EQ(segs[1].row, 8);
  EXPECT_EQ(segs[1].count, 3);

  // Beyond capacity: refused; beyond the pool: refused and nothing taken.
  EXPECT_EQ(x->Reserve(21).code(), absl::StatusCode::kInvalidArgument);
  const absl::Status short_of = y->Reserve(20);
  EXPECT_EQ(short_of.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(short_of.message().find("3 of 6 blocks free"), std::string::npos) << short_of;
  EXPECT_EQ(y->blocks().size(), 1u);
  EXPECT_EQ(pool->free_blocks(), 3);

  // Extend only within what is reserved.
  EXPECT_TRUE(x->Extend(8).ok());
  EXPECT_EQ(x->Extend(9).code(), absl::StatusCode::kInvalidArgument);

  x->Reset();
  EXPECT_EQ(x->length(), 0);
  EXPECT_TRUE(x->blocks().empty());
  EXPECT_EQ(pool->free_blocks(), 5);
  y.reset();  // destruction gives the blocks back too
  EXPECT_EQ(pool->free_blocks(), 6);

  // A contiguous cache: one segment, row = position.
  std::unique_ptr<KvCache> flat = KvCache::Create(c, 10, be.get()).value();
  EXPECT_FALSE(flat->paged());
  EXPECT_EQ(flat->reserved(), 10);
  const std::vector<KvSegment> one = flat->Segments(3, 9);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].row, 3);
  EXPECT_EQ(one[0].count, 6);
}

// (family, whether the backend reads paged caches itself; false: Model::Forward's gathered copies, the
// path of backends without paged attention).
class PagedForward : public ::testing::TestWithParam<std::tuple<ModelFamily, bool>> {};

// Three sequences (one with an overlay) through a schedule of prefill chunks and decodes, once into
// contiguous caches and once into paged caches whose blocks interleave (block tables like 0,3,6 / 1,4,7 /
// 2,5,8, so nearly every block boundary is a storage jump): the logits are identical, bit for bit -- the
// attention kernels see the same keys and values in the same order either way, read through the block
// table or from a gathered copy.
TEST_P(PagedForward, LogitsEqualContiguousCachesBitForBit) {
  const auto [family, paged_attention] = GetParam();
  BackendOptions bo;
  bo.paged_kv_attention = paged_attention;
  std::unique_ptr<Backend> be = MakeCpuBackend(bo);
  ASSERT_EQ(be->SupportsPagedKv(), paged_attention);
  ModelConfig c = SmallConfig(family);
  if (family == ModelFamily::kMixtral) c.sliding_window = 5;  // windows cross block boundaries too
  std::unique_ptr<Model> model =
      Model::Create(c, ModelWeights::RandomInit(c, 7, be.get()).value(), be.get()).value();
  std::shared_ptr<const ExpertOverlay> ov = RandomOverlay(c, be.get(), {{0, 2}, {1, 4}}, 9).value();
  const std::vector<std::vector<int32_t>> seqs = {RandomTokens(14, c.vocab_size, 21), RandomTokens(11, c.vocab_size, 22),
                                                  RandomTokens(9, c.vocab_size, 23)};
  const std::vector<const ExpertOverlay*> ovs = {nullptr, ov.get(), nullptr};
  std::unique_ptr<KvBlockPool> pool = KvBlockPool::Create(c, 16, 3, be.get()).value();
  std::vector<std::unique_ptr<KvCache>> flat, paged;
  for (int s = 0; s < 3; ++s) {
    flat.push_back(KvCache::Create(c, 16, be.get()).value());
    paged.push_back(KvCache::CreatePaged(pool.get(), 16).value());
  }
  for (int64_t b = 1; b <= 3; ++b) {
    for (auto& p : paged) ASSERT_TRUE(p->Reserve(3 * b).ok());  // interleaved block tables
  }
  const std::vector<std::vector<int64_t>> schedule = {{5, 4, 0}, {1, 1, 7}, {4, 6, 1}, {4, 0, 1}};
  std::vector<int64_t> done(3, 0);
  for (size_t step = 0; step < schedule.size(); ++step) {
    std::vector<SequenceInput> a, b;
    std::vector<int> which;
    for (int s = 0; s < 3; ++s) {
      const int64_t n = schedule[step][s];
      if (n == 0) continue;
      const auto tokens = absl::MakeConstSpan(seqs[s]).subspan(done[s], n);
      a.push_back({tokens, ovs[s], flat[s].get()});
      b.push_back({tokens, ovs[s], paged[s].get()});
      which.push_back(s);
      done[s] += n;
    }
    ForwardOptions all;
    all.logits = LogitsMode::kAll;
    absl::StatusOr<ForwardResult> ra = model->Forward(a, all);
    absl::StatusOr<ForwardResult> rb = model->Forward(b, all);
    ASSERT_TRUE(ra.ok()) << ra.status();
    ASSERT_TRUE(rb.ok()) << rb.status();
    EXPECT_EQ(be->ToHostF32(ra->logits).value(), be->ToHostF32(rb->logits).value()) << "step " << step;
    for (int s : which) EXPECT_EQ(paged[s]->length(), flat[s]->length());
  }
  for (int s = 0; s < 3; ++s) EXPECT_EQ(paged[s]->length(), static_cast<int64_t>(seqs[s].size()));
  paged.clear();
  EXPECT_EQ(pool->free_blocks(), 16);
}

INSTANTIATE_TEST_SUITE_P(Families, PagedForward,
                         ::testing::Combine(::testing::Values(ModelFamily::kQwen3Moe, ModelFamily::kMixtral,
                                                              ModelFamily::kQwen2Moe),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(ModelFamilyName(std::get<0>(info.param))) +
                                  (std::get<1>(info.param) ? "_in_place" : "_gathered");
                         });

// A forward whose paged cache cannot get its blocks fails RESOURCE_EXHAUSTED naming the pool, and the
// cache's length is unchanged (the positions it had are still valid).
TEST(PagedKvCache, ForwardWithoutFreeBlocksFailsAndLeavesTheCache) {
  std::unique_ptr<Backend> be = MakeCpuBackend();
  const ModelConfig c = SmallConfig(ModelFamily::kMixtral);
  std::unique_ptr<Model> model =
      Model::Create(c, ModelWeights::RandomInit(c, 7, be.get()).value(), be.get()).value();
  std::unique_ptr<KvBlockPool> pool = KvBlockPool::Create(c, 2, 4, be.get()).value();
  std::unique_ptr<KvCache> cache = KvCache::CreatePaged(pool.get(), 32).value();
  const std::vector<int32_t> prompt = RandomTokens(6, c.vocab_size, 5);
  SequenceInput in[1] = {{prompt, nullptr, cache.get()}};
  ASSERT_TRUE(model->Forward(in).ok());
  EXPECT_EQ(cache->length(), 6);
  const std::vector<int32_t> more = RandomTokens(3, c.vocab_size, 6);
  in[0].tokens = more;
  const absl::Status st = model->Forward(in).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("KV block pool"), std::string::npos) << st;
  EXPECT_EQ(cache->length(), 6);
}

}  // namespace
}  // namespace tessera
