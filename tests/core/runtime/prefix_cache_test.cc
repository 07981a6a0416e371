// PrefixCache: block chain hashing, exact reuse of stored KV (shared pool blocks, copied only before a
// write), version awareness (content digest, never names), LRU eviction by block, giving blocks back to
// the pool, concurrency; and the runtime with the cache on against the cache off.
#include "core/runtime/prefix_cache.h"

#include <cmath>
#include <cstring>
#include <random>
#include <thread>

#include "gtest/gtest.h"
#include "tests/core/runtime/runtime_test_util.h"

namespace tessera::runtime {
namespace {

using testing::World;
constexpr int64_t kBlock = 16;

std::vector<int32_t> Tokens(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int32_t& x : t) x = static_cast<int32_t>(10 + rng() % 240);
  return t;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A paged KV pool, a prefix cache of `cache_blocks` blocks over it, and sequences' caches over the same
// pool (what the runtime has). Caches a test creates are destroyed before this (declared after it).
struct Paged {
  Paged(const World& w, int64_t cache_blocks, int64_t pool_blocks = 256)
      : world(&w), pool(KvBlockPool::Create(w.config, pool_blocks, kBlock, w.be.get()).value()) {
    pc = PrefixCache::Create(pool.get(), {cache_blocks * pool->block_bytes()}).value();
  }
  std::unique_ptr<KvCache> NewKv(int64_t capacity = 256) const {
    return KvCache::CreatePaged(pool.get(), capacity).value();
  }
  const World* world;
  std::unique_ptr<KvBlockPool> pool;  // outlives the cache below
  std::unique_ptr<PrefixCache> pc;
};

// Runs `tokens` through the model into `cache`; returns the last position's logits.
std::vector<float> Prefill(const World& w, const ExpertOverlay* overlay, absl::Span<const int32_t> tokens,
                           KvCache* cache) {
  SequenceInput in[1] = {{tokens, overlay, cache}};
  ForwardOptions opt;
  return w.be->ToHostF32(w.model->Forward(in, opt).value().logits).value();
}

// Positions [0, n) of every layer's K and V, in position order wherever the blocks are.
std::vector<float> KvRows(const World& w, const KvCache& cache, int64_t n) {
  std::vector<float> out;
  for (int64_t l = 0; l < w.config.num_layers; ++l) {
    for (const Tensor* t : {&cache.k(l), &cache.v(l)}) {
      for (const KvSegment& seg : cache.Segments(0, n)) {
        std::vector<float> rows = w.be->ToHostF32(t->Rows(seg.row, seg.count)).value();
        out.insert(out.end(), rows.begin(), rows.end());
      }
    }
  }
  return out;
}

bool BitEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}

TEST(PrefixCacheTest, BlockHashesChainEveryTokenBeforeAndTheRoot) {
  World w;
  Paged p(w, 4);
  PrefixCache* pc = p.pc.get();
  const PrefixCache::Hash base = pc->Root("backbone-a", "");
  const std::vector<int32_t> t = Tokens(3 * kBlock + 5, 1);
  const std::vector<PrefixCache::Hash> h = pc->BlockHashes(base, t);
  ASSERT_EQ(h.size(), 3u);  // the partial block is not hashed
  EXPECT_EQ(pc->BlockHashes(base, t), h);
  // A change in block 1 keeps block 0's hash and changes every later one.
  std::vector<int32_t> t1 = t;
  t1[kBlock + 3] += 1;
  const std::vector<PrefixCache::Hash> h1 = pc->BlockHashes(base, t1);
  EXPECT_EQ(h1[0], h[0]);
  EXPECT_NE(h1[1], h[1]);
  EXPECT_NE(h1[2], h[2]);
  // The tail after the last whole block does not enter.
  std::vector<int32_t> t2 = t;
  t2.back() += 1;
  EXPECT_EQ(pc->BlockHashes(base, t2), h);
  // Backbone and version content are part of every block's identity.
  for (const PrefixCache::Hash& root :
       {pc->Root("backbone-b", ""), pc->Root("backbone-a", "sha-v1"), pc->Root("backbone-a", "sha-v2")}) {
    EXPECT_NE(root, base);
    const std::vector<PrefixCache::Hash> other = pc->BlockHashes(root, t);
    for (size_t i = 0; i < h.size(); ++i) EXPECT_NE(other[i], h[i]);
  }
  EXPECT_NE(pc->Root("backbone-a", "sha-v1"), pc->Root("backbone-a", "sha-v2"));
  // Field boundaries are unambiguous.
  EXPECT_NE(pc->Root("ab", "c"), pc->Root("a", "bc"));
}

TEST(PrefixCacheTest, CreateRejectsBadOptions) {
  World w;
  Paged p(w, 3);
  auto tiny = PrefixCache::Create(p.pool.get(), {100});
  ASSERT_FALSE(tiny.ok());
  EXPECT_EQ(tiny.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(tiny.status().message().find("--prefix-cache-bytes"), std::string::npos) << tiny.status();
  EXPECT_FALSE(PrefixCache::Create(nullptr, {1 << 20}).ok());
  EXPECT_EQ(p.pc->Stats().capacity_blocks, 3);
  EXPECT_EQ(p.pc->Stats().capacity_bytes, 3 * kBlock * KvCache::BytesPerPosition(w.config, DType::kF32));
  EXPECT_EQ(p.pc->Stats().block_tokens, kBlock);
  // A cache that is not paged over the pool is refused, not copied into.
  auto flat = KvCache::Create(w.config, 64, w.be.get()).value();
  EXPECT_EQ(p.pc->Store(p.pc->Root("bb", ""), Tokens(kBlock, 1), *flat).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(p.pc->Restore(p.pc->Root("bb", ""), Tokens(kBlock, 1), 8, *flat).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Nor is one paged over another pool: its block ids mean other rows.
  Paged other(w, 3);
  auto foreign = other.NewKv();
  EXPECT_EQ(p.pc->Store(p.pc->Root("bb", ""), Tokens(kBlock, 1), *foreign).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(p.pc->Restore(p.pc->Root("bb", ""), Tokens(kBlock, 1), 8, *foreign).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// A hit hands over exactly the stored blocks (shared: no copy, no new block), and the suffix prefilled
// after them gives bit for bit what the same two-part computation gives without the cache; against a
// cold one-piece prefill the logits agree up to float summation order (the documented caveat) and the
// argmax is the same.
TEST(PrefixCacheTest, HitRestoresStoredRowsBitForBitAndPrefillsOnlyTheRest) {
  World w;
  Paged p(w, 16);
  PrefixCache* pc = p.pc.get();
  auto NewKv = [&](const World&) { return p.NewKv(); };
  const PrefixCache::Hash root = pc->Root("bb", "");
  const std::vector<int32_t> prefix = Tokens(3 * kBlock, 2);
  for (int suffix_len : {1, 7, 16, 40}) {
    SCOPED_TRACE(suffix_len);
    const std::vector<int32_t> suffix = Tokens(suffix_len, 100 + suffix_len);
    const std::vector<int32_t> prompt = Concat(prefix, suffix);
    // The first request computed exactly the prefix (in one forward) and stored it.
    auto first = NewKv(w);
    Prefill(w, nullptr, prefix, first.get());
    ASSERT_TRUE(pc->Store(root, prefix, *first).ok());
    // The second restores it and prefills the suffix.
    auto hit = NewKv(w);
    const int64_t free_before = p.pool->free_blocks();
    ASSERT_EQ(pc->Restore(root, prompt, static_cast<int64_t>(prompt.size()) - 1, *hit).value(), 3 * kBlock);
    EXPECT_EQ(hit->length(), 3 * kBlock);
    EXPECT_EQ(p.pool->free_blocks(), free_before);  // shared, not copied
    ASSERT_EQ(hit->blocks().size(), 3u);
    if (suffix_len == 1) {  // the first request's own blocks, held by it, the cache and the hit
      for (int b = 0; b < 3; ++b) {
        EXPECT_EQ(hit->blocks()[b], first->blocks()[b]);
        EXPECT_EQ(p.pool->refs(hit->blocks()[b]), 3);
      }
    }
    EXPECT_TRUE(BitEqual(KvRows(w, *hit, 3 * kBlock), KvRows(w, *first, 3 * kBlock)));
    const std::vector<float> got = Prefill(w, nullptr, suffix, hit.get());
    // Without the cache, the same split: prefix, then suffix.
    auto split = NewKv(w);
    Prefill(w, nullptr, prefix, split.get());
    EXPECT_TRUE(BitEqual(got, Prefill(w, nullptr, suffix, split.get())));
    // Cold, in one piece.
    auto cold = NewKv(w);
    const std::vector<float> ref = Prefill(w, nullptr, prompt, cold.get());
    EXPECT_LE(MaxAbsDiff(got, ref), 1e-5);
    EXPECT_EQ(std::max_element(got.begin(), got.end()) - got.begin(),
              std::max_element(ref.begin(), ref.end()) - ref.begin());
  }
  const PrefixCacheStats s = pc->Stats();
  EXPECT_EQ(s.lookups, 4);
  EXPECT_EQ(s.hit_lookups, 4);
  EXPECT_EQ(s.hit_tokens, 4 * 3 * kBlock);
  EXPECT_EQ(s.blocks, 3);  // stored once, refreshed three times
  EXPECT_EQ(s.stored_blocks, 3);
}

// A prompt that is entirely cached keeps all but its last position and computes that one, giving the
// logits the cache-less path gives when it does the same (truncate the cached prompt, run the token).
TEST(PrefixCacheTest, FullPromptHitComputesTheLastToken) {
  World w;
  Paged p(w, 8);
  PrefixCache* pc = p.pc.get();
  auto NewKv = [&](const World&) { return p.NewKv(); };
  const PrefixCache::Hash root = pc->Root("bb", "");
  const std::vector<int32_t> prompt = Tokens(2 * kBlock, 3);
  auto first = NewKv(w);
  const std::vector<float> cold = Prefill(w, nullptr, prompt, first.get());
  ASSERT_TRUE(pc->Store(root, prompt, *first).ok());

  auto hit = NewKv(w);
  const int64_t n = static_cast<int64_t>(prompt.size());
  const std::vector<float> stored_rows = KvRows(w, *first, n);
  ASSERT_EQ(pc->Restore(root, prompt, n - 1, *hit).value(), n - 1);
  const std::vector<float> got = Prefill(w, nullptr, absl::MakeConstSpan(prompt).subspan(n - 1), hit.get());
  EXPECT_EQ(hit->length(), n);
  // The last position was written into a copy of the shared last block; the stored block is unchanged.
  EXPECT_EQ(hit->blocks()[0], first->blocks()[0]);
  EXPECT_NE(hit->blocks()[1], first->blocks()[1]);
  EXPECT_TRUE(BitEqual(KvRows(w, *first, n), stored_rows));

  auto split = NewKv(w);
  Prefill(w, nullptr, prompt, split.get());
  ASSERT_TRUE(split->Truncate(n - 1).ok());
  EXPECT_TRUE(BitEqual(got, Prefill(w, nullptr, absl::MakeConstSpan(prompt).subspan(n - 1), split.get())));
  EXPECT_LE(MaxAbsDiff(got, cold), 1e-5);
  // One block short of the prompt restores one block; nothing is restored for a one-token prompt.
  auto one = NewKv(w);
  EXPECT_EQ(pc->Restore(root, prompt, kBlock, *one).value(), kBlock);
  auto none = NewKv(w);
  EXPECT_EQ(pc->Restore(root, absl::MakeConstSpan(prompt).subspan(0, 1), 0, *none).value(), 0);
  EXPECT_EQ(none->length(), 0);
}

// The KV of one prompt under two versions differs (the overlay changes the layers after its first slot),
// so the cache keys it by the version's content digest: one version's blocks never serve the other, and
// two versions with the same content share.
TEST(PrefixCacheTest, VersionsWithDifferentContentNeverShareBlocks) {
  World w;
  Paged p(w, 16);
  PrefixCache* pc = p.pc.get();
  auto NewKv = [&](const World&) { return p.NewKv(); };
  const ExpertOverlay* v1 = w.Overlay("acme", 1);
  const ExpertOverlay* v2 = w.Overlay("acme", 2);
  ASSERT_NE(v1->digest(), v2->digest());
  const std::vector<int32_t> prompt = Tokens(2 * kBlock + 3, 4);
  auto kv1 = NewKv(w);
  auto kv2 = NewKv(w);
  Prefill(w, v1, prompt, kv1.get());
  Prefill(w, v2, prompt, kv2.get());
  EXPECT_NE(MaxAbsDiff(KvRows(w, *kv1, 2 * kBlock), KvRows(w, *kv2, 2 * kBlock)), 0.0);

  const PrefixCache::Hash r1 = pc->Root("bb", v1->digest());
  const PrefixCache::Hash r2 = pc->Root("bb", v2->digest());
  ASSERT_TRUE(pc->Store(r1, prompt, *kv1).ok());
  auto miss = NewKv(w);
  EXPECT_EQ(pc->Restore(r2, prompt, 100, *miss).value(), 0);
  EXPECT_TRUE(miss->blocks().empty());
  EXPECT_EQ(pc->Restore(pc->Root("bb", ""), prompt, 100, *miss).value(), 0);  // nor the base model
  EXPECT_EQ(pc->Restore(pc->Root("other-backbone", v1->digest()), prompt, 100, *miss).value(), 0);
  // A second copy of v1's content (another tenant's version of the same bytes) has the same digest.
  const testing::TestVersion& src = w.versions.at({"acme", 1});
  std::shared_ptr<const ExpertOverlay> twin =
      ExpertOverlay::FromSafetensors(w.config, src.blob.safetensors_bytes, w.be.get(), src.blob.sha256).value();
  ASSERT_NE(twin.get(), v1);
  auto hit = NewKv(w);
  EXPECT_EQ(pc->Restore(pc->Root("bb", twin->digest()), prompt, 100, *hit).value(), 2 * kBlock);
  EXPECT_TRUE(BitEqual(KvRows(w, *hit, 2 * kBlock), KvRows(w, *kv1, 2 * kBlock)));
}

// Least recently used blocks go first, and a chain's extensions before its prefix.
TEST(PrefixCacheTest, LruEvictionByBlock) {
  World w;
  Paged p(w, 4);
  PrefixCache* pc = p.pc.get();
  const PrefixCache::Hash root = pc->Root("bb", "");
  const std::vector<int32_t> a = Tokens(2 * kBlock, 5), b = Tokens(2 * kBlock, 6), c = Tokens(2 * kBlock, 7);
  auto kv = p.NewKv();
  auto fill = [&](const std::vector<int32_t>& t) {
    kv->Reset();
    Prefill(w, nullptr, t, kv.get());
    ASSERT_TRUE(pc->Store(root, t, *kv).ok());
  };
  auto restored = [&](const std::vector<int32_t>& t) {
    auto dst = p.NewKv();
    return pc->Restore(root, t, 1000, *dst).value();
  };
  fill(a);
  fill(b);
  EXPECT_EQ(pc->Stats().blocks, 4);
  EXPECT_EQ(restored(a), 2 * kBlock);  // a is now more recent than b
  fill(c);                             // takes b's two blocks
  EXPECT_EQ(pc->Stats().evictions, 2);
  EXPECT_EQ(pc->Stats().bytes, 4 * pc->Stats().block_bytes);
  EXPECT_EQ(restored(a), 2 * kBlock);
  EXPECT_EQ(restored(c), 2 * kBlock);
  EXPECT_EQ(restored(b), 0);

  // A 3-block chain d and then one more block: the victim is the chain's last block, not its first.
  Paged p3(w, 3);
  PrefixCache* pc3 = p3.pc.get();
  auto kv3 = p3.NewKv();  // declared after p3: destroyed before its pool
  const std::vector<int32_t> d = Tokens(3 * kBlock, 8), e = Tokens(kBlock, 9);
  Prefill(w, nullptr, d, kv3.get());
  ASSERT_TRUE(pc3->Store(root, d, *kv3).ok());
  kv3->Reset();
  Prefill(w, nullptr, e, kv3.get());
  ASSERT_TRUE(pc3->Store(root, e, *kv3).ok());
  auto dst = p3.NewKv();
  EXPECT_EQ(pc3->Restore(root, d, 1000, *dst).value(), 2 * kBlock);
  EXPECT_EQ(pc3->Stats().evictions, 1);
}

// The cache's blocks are the pool's: when sequences need blocks and too few are free, the pool takes back
// the cache's least recently used blocks that no sequence holds, and never the ones a sequence holds.
TEST(PrefixCacheTest, PoolReclaimsOnlyBlocksNoSequenceHolds) {
  World w;
  Paged p(w, /*cache_blocks=*/6, /*pool_blocks=*/8);
  PrefixCache* pc = p.pc.get();
  const PrefixCache::Hash root = pc->Root("bb", "");
  const std::vector<int32_t> a = Tokens(2 * kBlock, 11), b = Tokens(2 * kBlock, 12), c = Tokens(2 * kBlock, 13);
  for (const auto* t : {&a, &b, &c}) {  // three prompts computed, stored, their sequences gone
    auto kv = p.NewKv();
    Prefill(w, nullptr, *t, kv.get());
    ASSERT_TRUE(pc->Store(root, *t, *kv).ok());
  }
  EXPECT_EQ(p.pool->free_blocks(), 2);
  EXPECT_EQ(p.pool->available_blocks(), 8);
  // A sequence reading a (the least recently stored) holds its two blocks.
  auto reader = p.NewKv();
  ASSERT_EQ(pc->Restore(root, a, 1000, *reader).value(), 2 * kBlock);
  EXPECT_EQ(p.pool->available_blocks(), 6);
  EXPECT_EQ(pc->Stats().shared_blocks, 2);
  // Another sequence needs 5 blocks: 2 free + 3 reclaimed, b's (least recently used) then one of c's.
  auto big = p.NewKv();
  ASSERT_TRUE(big->Reserve(5 * kBlock).ok());
  EXPECT_EQ(pc->Stats().evictions, 3);
  EXPECT_EQ(pc->Stats().blocks, 3);
  auto probe = p.NewKv();
  EXPECT_EQ(pc->Restore(root, b, 1000, *probe).value(), 0);
  probe = p.NewKv();
  EXPECT_EQ(pc->Restore(root, c, 1000, *probe).value(), kBlock);  // its first block stayed (evicted last)
  probe.reset();
  // a's blocks are held by `reader`: not reclaimable, so one more block cannot be had.
  EXPECT_FALSE(big->Reserve(8 * kBlock).ok());
  auto again = p.NewKv();
  EXPECT_EQ(pc->Restore(root, a, 1000, *again).value(), 2 * kBlock);
}

// Threads restore and store overlapping prefixes through a cache far smaller than their blocks (so
// eviction runs all the time); every restore must return exactly the rows stored for that prefix.
// The rows are synthetic: row p of every layer holds a value derived from tokens[0..p], so a block of
// another chain, a stale slot or a torn copy shows up as a mismatch.
TEST(PrefixCacheTest, ConcurrentRestoreAndStoreServeOnlyTheirPrefixRows) {
  World w;
  Paged p(w, 6);
  PrefixCache* pc = p.pc.get();
  const PrefixCache::Hash root = pc->Root("bb", "");
  const int64_t row = w.config.num_kv_heads * w.config.head_dim;
  auto row_value = [](absl::Span<const int32_t> t, int64_t p) {
    uint32_t h = 2166136261u;
    for (int64_t i = 0; i <= p; ++i) h = (h ^ static_cast<uint32_t>(t[i])) * 16777619u;
    return static_cast<float>(h % 1000003u);
  };
  // Prompts: 4 shared heads x 3 tails, 2-4 blocks each.
  std::vector<std::vector<int32_t>> prompts;
  for (int head = 0; head < 4; ++head) {
    for (int tail = 0; tail < 3; ++tail) {
      prompts.push_back(Concat(Tokens(kBlock * (1 + head % 2), 50 + head), Tokens(kBlock * (1 + tail), 70 + tail)));
    }
  }
  std::atomic<int> bad{0}, hits{0};
  auto worker = [&](int id) {
    std::mt19937 rng(static_cast<uint32_t>(id));
    auto kv = p.NewKv();
    // The storage row of position `pos` (through the block table).
    auto row_of = [&](int64_t pos) { return kv->Segments(pos, pos + 1)[0].row; };
    for (int it = 0; it < 150; ++it) {
      const std::vector<int32_t>& t = prompts[rng() % prompts.size()];
      kv->Reset();
      const int64_t n = pc->Restore(root, t, static_cast<int64_t>(t.size()), *kv).value();
      if (n > 0) hits.fetch_add(1);
      for (int64_t l = 0; l < w.config.num_layers; ++l) {
        const float* k = kv->k(l).data<float>();
        const float* v = kv->v(l).data<float>();
        for (int64_t pos = 0; pos < n; ++pos) {
          const float want = row_value(t, pos) + static_cast<float>(l);
          const int64_t r = row_of(pos);
          if (k[r * row] != want || v[r * row + row - 1] != -want) bad.fetch_add(1);
        }
      }
      // "Compute" the rest (into blocks of its own: Reserve) and store the whole prompt.
      ASSERT_TRUE(kv->Reserve(static_cast<int64_t>(t.size())).ok());
      for (int64_t l = 0; l < w.config.num_layers; ++l) {
        Tensor k = kv->k(l), v = kv->v(l);
        for (int64_t pos = n; pos < static_cast<int64_t>(t.size()); ++pos) {
          const float want = row_value(t, pos) + static_cast<float>(l);
          const int64_t r = row_of(pos);
          std::fill_n(k.data<float>() + r * row, row, want);
          std::fill_n(v.data<float>() + r * row, row, -want);
        }
      }
      ASSERT_TRUE(kv->Extend(static_cast<int64_t>(t.size())).ok());
      ASSERT_TRUE(pc->Store(root, t, *kv).ok());
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back(worker, i);
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(hits.load(), 0);
  const PrefixCacheStats s = pc->Stats();
  EXPECT_GT(s.evictions, 0);
  EXPECT_LE(s.blocks, s.capacity_blocks);
  EXPECT_EQ(s.lookups, 4 * 150);
}

// ---- The runtime with the cache on against the cache off ----

RuntimeOptions Options(int64_t prefix_cache_bytes) {
  RuntimeOptions o;
  o.max_batch = 4;
  o.kv_capacity = 200;
  o.prefix_cache_bytes = prefix_cache_bytes;
  o.backbone_digest = "test-backbone";
  return o;
}

GenerateParams Greedy(std::string prompt, int max_tokens = 12) {
  GenerateParams p;
  p.prompt = std::move(prompt);
  p.max_tokens = max_tokens;
  return p;
}

int64_t BlockBytes(const World& w) { return kBlock * KvCache::BytesPerPosition(w.config, DType::kF32); }

// A shared system prompt with different questions (hits of 0, 1, 2, 3 blocks), the same prompt again (a
// full-prompt hit), a second turn that extends the first (the answer's blocks came from decoding), and
// seeded sampling: the cache changes nothing a request returns except cached_tokens.
TEST(PrefixCacheRuntimeTest, GenerationsEqualWithCacheOnAndOff) {
  World w;
  for (const char* t : {"acme", "beta", "gamma"}) w.source.SetLive(t, 1);  // delta stays on the base model
  auto off = w.MakeRuntime(Options(0));
  auto on = w.MakeRuntime(Options(64 * BlockBytes(w)));
  const std::string system = "You are a terse assistant. Answer in one line.\n";  // 48 bytes + BOS
  std::vector<std::pair<std::string, GenerateParams>> reqs;
  for (const char* q : {"Q: two plus two?", "Q: the capital of France?", "Q: spell cat backwards"}) {
    reqs.push_back({"delta", Greedy(system + q)});
    reqs.push_back({"acme", Greedy(system + q)});
  }
  reqs.push_back({"delta", Greedy(system.substr(0, 10))});     // shorter than a block: never a hit
  reqs.push_back({"delta", Greedy(system.substr(0, 31))});     // BOS + 31 = exactly 2 blocks
  reqs.push_back({"delta", Greedy(system.substr(0, 31))});     // again: a full-prompt hit
  reqs.push_back({"gamma", Greedy(system + "Q: two plus two?", 20)});
  GenerateParams sampled = Greedy(system + "Q: a story", 16);
  sampled.temperature = 0.8f;
  sampled.top_k = 20;
  sampled.seed = 7;
  reqs.push_back({"beta", sampled});
  reqs.push_back({"beta", sampled});

  std::vector<int> cached;
  for (auto& [tenant, p] : reqs) {
    absl::StatusOr<GenerateResult> a = off->Generate(tenant, std::nullopt, p);
    absl::StatusOr<GenerateResult> b = on->Generate(tenant, std::nullopt, p);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
    EXPECT_EQ(a->tokens, b->tokens) << tenant << ": " << p.prompt;
    EXPECT_EQ(a->text, b->text);
    EXPECT_EQ(a->finish_reason, b->finish_reason);
    EXPECT_EQ(a->cached_tokens, 0);
    cached.push_back(b->cached_tokens);
  }
  // delta's first question misses; its later ones hit the system prompt's 3 whole blocks (BOS + 47
  // bytes; "Q: " follows, then the prompts differ); acme's questions never hit delta's blocks (another
  // version) but hit their own. A prompt of exactly 2 blocks keeps all but its last token.
  ASSERT_EQ(system.size(), 47u);
  const std::vector<int> want = {0, 0, 3 * kBlock, 3 * kBlock, 3 * kBlock, 3 * kBlock,
                                 0, 2 * kBlock - 1, 2 * kBlock - 1, 0, 0, 3 * kBlock};
  EXPECT_EQ(cached, want);

  // A second turn: the first turn's prompt, its answer and a new question. The answer's KV was stored
  // when the first turn finished, so the hit reaches into it.
  const GenerateParams turn1 = Greedy(system + "Q: two plus two?", 24);
  absl::StatusOr<GenerateResult> t1 = on->Generate("delta", std::nullopt, turn1);
  ASSERT_TRUE(t1.ok());
  const GenerateParams turn2 = Greedy(turn1.prompt + t1->text + "\nQ: and times three?");
  absl::StatusOr<GenerateResult> a2 = off->Generate("delta", std::nullopt, turn2);
  absl::StatusOr<GenerateResult> b2 = on->Generate("delta", std::nullopt, turn2);
  ASSERT_TRUE(a2.ok() && b2.ok());
  EXPECT_EQ(a2->tokens, b2->tokens);
  const int64_t turn1_positions = 1 + static_cast<int64_t>(turn1.prompt.size()) + t1->completion_tokens - 1;
  EXPECT_EQ(b2->cached_tokens, turn1_positions / kBlock * kBlock);
  EXPECT_GT(b2->cached_tokens, static_cast<int>(1 + turn1.prompt.size()));

  const RuntimeStatus s = on->Status();
  EXPECT_TRUE(s.prefix_cache_enabled);
  EXPECT_GT(s.prefix_cache.hit_tokens, 0);
  EXPECT_GT(s.prefix_cache.miss_blocks, 0);
  EXPECT_GT(s.prefix_cache.bytes, 0);
  EXPECT_FALSE(off->Status().prefix_cache_enabled);
}

// Version awareness end to end: tenants on byte-identical versions share, a pinned other version misses,
// a promotion makes the next request miss (and then hit its own blocks), and a version re-published
// with other content under the same number never sees the old KV.
TEST(PrefixCacheRuntimeTest, KeyedByVersionContentNotByName) {
  World w;
  // "twin" serves a copy of acme v1's bytes.
  w.source.Put("twin", 1, w.versions.at({"acme", 1}).blob);
  w.source.SetLive("twin", 1);
  w.source.SetLive("acme", 1);
  w.source.SetLive("beta", 1);
  auto on = w.MakeRuntime(Options(64 * BlockBytes(w)));
  auto off = w.MakeRuntime(Options(0));
  const GenerateParams p = Greedy("A prompt long enough for three blocks of sixteen bytes.", 10);
  ASSERT_EQ(p.prompt.size(), 55u);  // BOS + 55 = 56 tokens: 3 whole blocks
  auto run = [&](Runtime& rt, const std::string& tenant, std::optional<int64_t> v) {
    absl::StatusOr<GenerateResult> r = rt.Generate(tenant, v, p);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : GenerateResult{};
  };
  const GenerateResult acme1 = run(*on, "acme", std::nullopt);
  EXPECT_EQ(acme1.version, 1);
  EXPECT_EQ(acme1.cached_tokens, 0);
  const GenerateResult twin = run(*on, "twin", std::nullopt);
  EXPECT_EQ(twin.cached_tokens, 3 * kBlock);  // the same content's blocks
  EXPECT_EQ(twin.tokens, acme1.tokens);

  const GenerateResult pinned2 = run(*on, "acme", 2);
  EXPECT_EQ(pinned2.cached_tokens, 0);
  EXPECT_EQ(pinned2.tokens, run(*off, "acme", 2).tokens);
  EXPECT_NE(pinned2.tokens, acme1.tokens);  // the versions really differ

  // beta serves v1; a new version 2 (other content) is promoted: the next live request misses.
  w.Add("beta", 2, testing::SlotsFor(w.config, {1, 5}), 22);
  const GenerateResult beta1 = run(*on, "beta", std::nullopt);
  EXPECT_EQ(beta1.version, 1);
  const GenerateResult beta1_again = run(*on, "beta", std::nullopt);
  EXPECT_EQ(beta1_again.cached_tokens, 3 * kBlock);
  ASSERT_TRUE(on->SetLive("beta", 2).ok());
  const GenerateResult beta2 = run(*on, "beta", std::nullopt);
  EXPECT_EQ(beta2.version, 2);
  EXPECT_EQ(beta2.cached_tokens, 0);
  EXPECT_EQ(beta2.tokens, run(*off, "beta", 2).tokens);
  EXPECT_EQ(run(*on, "beta", std::nullopt).cached_tokens, 3 * kBlock);  // now its own blocks

  // gamma's version 1 re-published with other bytes (tenant deleted and re-created): a miss, and the
  // new content's output.
  EXPECT_EQ(run(*on, "gamma", 1).cached_tokens, 0);
  EXPECT_EQ(run(*on, "gamma", 1).cached_tokens, 3 * kBlock);
  testing::TestVersion republished = testing::MakeVersion(w.config, w.be.get(), testing::SlotsFor(w.config, {2}), 99);
  w.source.Put("gamma", 1, republished.blob);
  on->ForgetTenant("gamma");
  off->ForgetTenant("gamma");
  const GenerateResult gamma_new = run(*on, "gamma", 1);
  EXPECT_EQ(gamma_new.cached_tokens, 0);
  EXPECT_EQ(gamma_new.sha256, republished.blob.sha256);
  EXPECT_EQ(gamma_new.tokens, run(*off, "gamma", 1).tokens);
}

// Requests sharing a prefix arrive together from many threads while the cache evicts: every output is
// the cache-off output.
TEST(PrefixCacheRuntimeTest, ConcurrentRequestsUnderEviction) {
  World w;
  auto off = w.MakeRuntime(Options(0));
  auto on = w.MakeRuntime(Options(6 * BlockBytes(w)));
  const std::vector<std::string> heads = {"Shared system prompt number one, long. ",
                                          "Another shared system prompt, two!! "};
  std::vector<std::pair<std::string, GenerateParams>> reqs;
  for (int i = 0; i < 16; ++i) {
    reqs.push_back({i % 3 == 0 ? "acme" : "delta", Greedy(heads[i % 2] + "question " + std::to_string(i % 5), 8)});
  }
  std::vector<GenerateResult> want(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) want[i] = off->Generate(reqs[i].first, std::nullopt, reqs[i].second).value();
  for (int round = 0; round < 2; ++round) {
    std::vector<absl::StatusOr<GenerateResult>> got(reqs.size(), absl::UnknownError("not run"));
    std::vector<std::thread> threads;
    for (size_t i = 0; i < reqs.size(); ++i) {
      threads.emplace_back([&, i] { got[i] = on->Generate(reqs[i].first, std::nullopt, reqs[i].second); });
    }
    for (auto& t : threads) t.join();
    for (size_t i = 0; i < reqs.size(); ++i) {
      ASSERT_TRUE(got[i].ok()) << got[i].status();
      EXPECT_EQ(got[i]->tokens, want[i].tokens) << i;
    }
  }
  const RuntimeStatus s = on->Status();
  EXPECT_GT(s.prefix_cache.hit_tokens, 0);
  EXPECT_GT(s.prefix_cache.evictions, 0);
  EXPECT_LE(s.prefix_cache.blocks, 6);
}

TEST(PrefixCacheRuntimeTest, BadBudgetNamesTheFlag) {
  World w;
  auto neg = Runtime::Create(w.model.get(), &w.tokenizer, &w.source, Options(-1));
  ASSERT_FALSE(neg.ok());
  EXPECT_NE(neg.status().message().find("--prefix-cache-bytes"), std::string::npos);
  auto small = Runtime::Create(w.model.get(), &w.tokenizer, &w.source, Options(10));
  ASSERT_FALSE(small.ok());
  EXPECT_NE(small.status().message().find("--prefix-cache-bytes"), std::string::npos);
}

}  // namespace
}  // namespace tessera::runtime
