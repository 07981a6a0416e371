// Paged KV memory in the runtime (kv_cache_pool.h, the policy in scheduler.cc): requests take blocks
// of one pool as they grow, are admitted by free blocks (short ones share the pool a long one would
// fill), and when decodes outgrow the pool the youngest request is preempted and later recomputes --
// nothing fails, every output equals the single-request reference (tokens, sampled tokens, routing),
// a preempted request can be cancelled while it waits, and every block comes back.
#include <atomic>
#include <mutex>
#include <thread>

#include "gtest/gtest.h"
#include "tests/core/runtime/runtime_test_util.h"

namespace tessera::runtime {
namespace {

using testing::StepLog;
using testing::World;

std::string Text(size_t n, char seed) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += static_cast<char>('a' + (seed + i * 5 + i / 3) % 26);
  return s;
}

GenerateParams Params(std::string prompt, int max_tokens) {
  GenerateParams p;
  p.prompt = std::move(prompt);
  p.max_tokens = max_tokens;
  return p;
}

// A pool of one full context (64 positions in blocks of `block`), four batch slots.
RuntimeOptions OnePoolOfOneContext(int64_t block, StepLog* log) {
  RuntimeOptions o;
  o.max_batch = 4;
  o.kv_capacity = 64;
  o.kv_block_tokens = block;
  o.kv_blocks = 64 / block;
  o.on_step = [log](const StepInfo& s) { log->Add(s); };
  return o;
}

// Runs `jobs` (tenant, params) from one thread each, all queued before the scheduler starts.
std::vector<absl::StatusOr<GenerateResult>> RunTogether(Runtime& rt,
                                                        const std::vector<std::pair<std::string, GenerateParams>>& jobs) {
  std::vector<absl::StatusOr<GenerateResult>> got(jobs.size(), absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < jobs.size(); ++i) {
    threads.emplace_back([&, i] { got[i] = rt.Generate(jobs[i].first, std::nullopt, jobs[i].second); });
  }
  testing::WaitFor([&] { return rt.Status().pending_requests == static_cast<int64_t>(jobs.size()); });
  rt.Resume();
  for (auto& t : threads) t.join();
  return got;
}

TEST(PagedKvRuntime, ShortRequestsShareThePoolAndALongOneWaitsForFreeBlocks) {
  World w;
  {
    // Four 6-token prompts need a block each: all four run in the first step, in one 64-position pool.
    StepLog log;
    RuntimeOptions o = OnePoolOfOneContext(8, &log);
    o.start_paused = true;
    auto rt = w.MakeRuntime(o);
    std::vector<std::pair<std::string, GenerateParams>> jobs;
    for (int i = 0; i < 4; ++i) jobs.push_back({"delta", Params(Text(5, static_cast<char>(i)), 4)});
    auto got = RunTogether(*rt, jobs);
    for (size_t i = 0; i < jobs.size(); ++i) {
      ASSERT_TRUE(got[i].ok()) << got[i].status();
      EXPECT_EQ(got[i]->tokens, w.Ref("delta", 0, jobs[i].second, o.kv_capacity).tokens) << i;
    }
    EXPECT_EQ(log.MaxSequences(), 4);
    EXPECT_EQ(log.Preempted(), 0);
  }
  {
    // Two 46-token prompts need 6 of the 8 blocks each: the second waits until the first is done (no
    // preemption needed), instead of failing or thrashing.
    StepLog log;
    RuntimeOptions o = OnePoolOfOneContext(8, &log);
    o.start_paused = true;
    auto rt = w.MakeRuntime(o);
    std::vector<std::pair<std::string, GenerateParams>> jobs = {{"delta", Params(Text(45, 'a'), 4)},
                                                                {"acme", Params(Text(45, 'k'), 4)}};
    w.source.SetLive("acme", 1);
    auto got = RunTogether(*rt, jobs);
    for (size_t i = 0; i < jobs.size(); ++i) {
      ASSERT_TRUE(got[i].ok()) << got[i].status();
      const int64_t v = jobs[i].first == "acme" ? 1 : 0;
      EXPECT_EQ(got[i]->tokens, w.Ref(jobs[i].first, v, jobs[i].second, o.kv_capacity).tokens) << i;
    }
    EXPECT_EQ(log.MaxSequences(), 1);
    EXPECT_EQ(log.Preempted(), 0);
    const RuntimeStatus s = rt->Status();
    EXPECT_EQ(s.kv_blocks_total, 8);
    EXPECT_EQ(s.kv_blocks_free, 8);
    EXPECT_EQ(s.kv_block_tokens, 8);
  }
}

// Four requests that each grow to ~50 positions share a pool of 64: they are all admitted (their prompts
// fit), and as they decode the pool runs out again and again. The youngest is preempted each time and
// recomputes later; every request finishes OK with the reference's tokens (greedy and sampled) and
// routing, with chunked prefill and the prefix cache on or off.
TEST(PagedKvRuntime, PreemptsInsteadOfFailingAndOutputsEqualTheReference) {
  World w;
  w.source.SetLive("acme", 1);
  struct Mode {
    int64_t max_step_tokens;
    bool prefix_cache;
  };
  for (const Mode m : {Mode{0, false}, Mode{8, false}, Mode{0, true}, Mode{8, true}}) {
    SCOPED_TRACE(::testing::Message() << "max_step_tokens " << m.max_step_tokens << " prefix cache " << m.prefix_cache);
    StepLog log;
    RuntimeOptions o = OnePoolOfOneContext(4, &log);
    o.start_paused = true;
    o.max_step_tokens = m.max_step_tokens;
    // The prefix cache's blocks are added to the pool: 4 of them keep the pool far below the requests' needs.
    o.prefix_cache_bytes = m.prefix_cache ? 4 * 4 * KvCache::BytesPerPosition(w.config, DType::kF32) : 0;
    auto rt = w.MakeRuntime(o);
    std::vector<std::pair<std::string, GenerateParams>> jobs;
    for (int i = 0; i < 4; ++i) {
      GenerateParams p = Params(Text(9 + i, static_cast<char>(3 * i)), 40);
      p.return_routing = true;
      if (i == 2) {
        p.temperature = 0.9f;
        p.seed = 77;
      }
      jobs.push_back({i % 2 ? "acme" : "delta", p});
    }
    auto got = RunTogether(*rt, jobs);
    for (size_t i = 0; i < jobs.size(); ++i) {
      SCOPED_TRACE(i);
      ASSERT_TRUE(got[i].ok()) << got[i].status();
      const int64_t v = jobs[i].first == "acme" ? 1 : 0;
      const testing::RefOutput want = w.Ref(jobs[i].first, v, jobs[i].second, o.kv_capacity);
      EXPECT_EQ(got[i]->tokens, want.tokens);
      EXPECT_EQ(got[i]->text, want.text);
      const std::vector<LayerRouting> want_routing = SummarizeRouting(want.routing);
      ASSERT_EQ(got[i]->routing.size(), want_routing.size());
      for (size_t l = 0; l < want_routing.size(); ++l) {
        EXPECT_EQ(got[i]->routing[l].expert_tokens, want_routing[l].expert_tokens) << "layer " << l;
      }
    }
    EXPECT_GT(log.Preempted(), 0) << "the pool never ran out: the test does not test preemption";
    const RuntimeStatus s = rt->Status();
    EXPECT_EQ(s.kv_preemptions, log.Preempted());
    EXPECT_EQ(s.preempted_requests, 0);
    // Every block is free but those only the prefix cache holds.
    EXPECT_EQ(s.prefix_cache.shared_blocks, 0);
    EXPECT_EQ(s.kv_blocks_free + s.prefix_cache.blocks, s.kv_blocks_total);
    EXPECT_EQ(s.kv_blocks_total, 16 + (m.prefix_cache ? 4 : 0));
  }
}

// The youngest of two long requests is preempted; the scheduler is paused right then, and the caller
// of the preempted one gives up while it waits. It returns CANCELLED, the other finishes as the
// reference does, and no block or queue entry is left behind.
TEST(PagedKvRuntime, APreemptedRequestCanBeCancelledWhileItWaits) {
  World w;
  StepLog log;
  std::atomic<bool> preempted{false};
  std::atomic<Runtime*> self{nullptr};
  RuntimeOptions o = OnePoolOfOneContext(4, &log);
  o.on_step = [&](const StepInfo& s) {
    log.Add(s);
    if (s.preempted > 0 && !preempted.load()) {
      self.load()->Pause();
      preempted.store(true);
    }
  };
  o.start_paused = true;
  auto rt = w.MakeRuntime(o);
  self.store(rt.get());
  GenerateParams first = Params(Text(9, 'a'), 50);
  GenerateParams second = Params(Text(9, 'q'), 50);
  std::atomic<bool> give_up{false};
  second.cancelled = [&] { return give_up.load(); };
  absl::StatusOr<GenerateResult> a = absl::UnknownError("not run"), b = absl::UnknownError("not run");
  std::thread ta([&] { a = rt->Generate("delta", std::nullopt, first); });
  testing::WaitFor([&] { return rt->Status().pending_requests == 1; });
  std::thread tb([&] { b = rt->Generate("delta", std::nullopt, second); });  // queued second: admitted second
  testing::WaitFor([&] { return rt->Status().pending_requests == 2; });
  rt->Resume();
  testing::WaitFor([&] { return preempted.load(); });
  EXPECT_EQ(rt->Status().preempted_requests, 1);
  give_up.store(true);
  tb.join();  // while the scheduler is paused: the request leaves the preempted queue
  EXPECT_EQ(rt->Status().preempted_requests, 0);
  rt->Resume();
  ta.join();
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->tokens, w.Ref("delta", 0, first, o.kv_capacity).tokens);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kCancelled) << b.status();
  EXPECT_TRUE(preempted.load());
  const RuntimeStatus s = rt->Status();
  EXPECT_EQ(s.preempted_requests, 0);
  EXPECT_EQ(s.kv_blocks_free, s.kv_blocks_total);
  EXPECT_EQ(s.kv_caches_free, 4);
}

TEST(PagedKvRuntime, OptionsThatCannotHoldOneContextAreRefused) {
  World w;
  RuntimeOptions o;
  o.kv_capacity = 64;
  o.kv_block_tokens = 16;
  o.kv_blocks = 3;  // 48 positions: a request could not reach its context even alone
  absl::Status st = Runtime::Create(w.model.get(), &w.tokenizer, &w.source, o).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("kv_blocks must hold one full context (4 blocks"), std::string::npos) << st;
  o.kv_blocks = 0;
  o.kv_block_tokens = 0;
  EXPECT_EQ(Runtime::Create(w.model.get(), &w.tokenizer, &w.source, o).status().code(),
            absl::StatusCode::kInvalidArgument);
  // The default: every slot at full context.
  o.kv_block_tokens = 16;
  auto rt = Runtime::Create(w.model.get(), &w.tokenizer, &w.source, o).value();
  EXPECT_EQ(rt->Status().kv_blocks_total, o.max_batch * 4);
}

}  // namespace
}  // namespace tessera::runtime
