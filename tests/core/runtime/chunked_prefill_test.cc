// Chunked prefill (RuntimeOptions::max_step_tokens): the step budget and the decode-first policy hold in
// every step, long prompts are split over steps while decodes keep running, and the tokens equal the
// single-request reference (as unchunked batching does), with and without the prefix cache.
#include <atomic>
#include <mutex>
#include <thread>

#include "gtest/gtest.h"
#include "tests/core/runtime/runtime_test_util.h"

namespace tessera::runtime {
namespace {

using testing::StepLog;
using testing::World;
using namespace std::chrono_literals;

GenerateParams Greedy(std::string prompt, int max_tokens) {
  GenerateParams p;
  p.prompt = std::move(prompt);
  p.max_tokens = max_tokens;
  return p;
}

std::string Text(size_t n, char seed) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += static_cast<char>('a' + (seed + i * 7 + i / 5) % 26);
  return s;
}

RuntimeOptions Options(int64_t max_step_tokens, StepLog* log = nullptr) {
  RuntimeOptions o;
  o.max_batch = 6;
  o.kv_capacity = 240;
  o.max_step_tokens = max_step_tokens;
  if (log != nullptr) o.on_step = [log](const StepInfo& s) { log->Add(s); };
  return o;
}

// Mixed prompt lengths from several threads; every output equals the plain single-request loop.
TEST(ChunkedPrefillTest, OutputsEqualTheSingleRequestReference) {
  World w;
  w.source.SetLive("acme", 1);
  for (int64_t budget : {0, 7, 16, 48}) {
    SCOPED_TRACE(budget);
    for (bool prefix_cache : {false, true}) {
      RuntimeOptions o = Options(budget);
      o.prefix_cache_bytes = prefix_cache ? 64 * 16 * KvCache::BytesPerPosition(w.config, DType::kF32) : 0;
      auto rt = w.MakeRuntime(o);
      std::vector<std::pair<std::string, GenerateParams>> jobs;
      for (int i = 0; i < 8; ++i) {
        const size_t len = i % 4 == 0 ? 150 : 5 + 9 * i;
        jobs.push_back({i % 2 ? "acme" : "delta", Greedy(Text(len, static_cast<char>(i % 3)), 12)});
      }
      std::vector<absl::StatusOr<GenerateResult>> got(jobs.size(), absl::UnknownError("not run"));
      std::vector<std::thread> threads;
      for (size_t i = 0; i < jobs.size(); ++i) {
        threads.emplace_back([&, i] { got[i] = rt->Generate(jobs[i].first, std::nullopt, jobs[i].second); });
      }
      for (auto& t : threads) t.join();
      for (size_t i = 0; i < jobs.size(); ++i) {
        ASSERT_TRUE(got[i].ok()) << got[i].status();
        const int64_t v = jobs[i].first == "acme" ? 1 : 0;
        EXPECT_EQ(got[i]->tokens, w.Ref(jobs[i].first, v, jobs[i].second, o.kv_capacity).tokens) << i;
      }
    }
  }
}

// Three requests decode; a 200-token prompt joins. With a budget of 32 tokens a step, every step runs all
// decodes plus at most what is left of the budget (>= 8), the prompt is split over several steps, and
// the decodes advance in each of them. The scheduler is paused at the first all-decode step until the
// prompt is queued, so the decoders (60 tokens each) cannot finish first however the threads are
// scheduled.
TEST(ChunkedPrefillTest, StepBudgetDecodesFirstAndLongPromptsSplit) {
  World w;
  StepLog log;
  RuntimeOptions o = Options(32, &log);
  o.start_paused = true;  // the three decoders join in the same step (none can finish before another starts)
  std::atomic<Runtime*> self{nullptr};
  std::atomic<bool> paused{false};
  o.on_step = [&](const StepInfo& s) {
    log.Add(s);
    if (!paused.load() && s.sequences == 3 && s.prefill_sequences == 0) {
      self.load()->Pause();
      paused.store(true);  // after Pause(): the test's Resume() cannot come before it
    }
  };
  auto rt = w.MakeRuntime(o);
  self.store(rt.get());
  std::vector<std::thread> decoders;
  for (int i = 0; i < 3; ++i) {
    decoders.emplace_back([&, i] {
      absl::StatusOr<GenerateResult> r = rt->Generate("delta", std::nullopt, Greedy(Text(6, static_cast<char>(i)), 60));
      EXPECT_TRUE(r.ok()) << r.status();
    });
  }
  for (int i = 0; i < 30000 && rt->Status().pending_requests < 3; ++i) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(rt->Status().pending_requests, 3);
  rt->Resume();
  for (int i = 0; i < 30000 && !paused.load(); ++i) std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(paused.load()) << "the three decoders never decoded together";
  size_t before;
  {
    std::lock_guard<std::mutex> lock(log.mu);
    before = log.steps.size();
  }
  const GenerateParams long_prompt = Greedy(Text(199, 5), 4);  // BOS + 199 = 200 tokens
  absl::StatusOr<GenerateResult> r = absl::UnknownError("not run");
  std::thread prompter([&] { r = rt->Generate("delta", std::nullopt, long_prompt); });
  for (int i = 0; i < 30000 && rt->Status().pending_requests == 0; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(rt->Status().pending_requests, 1);
  rt->Resume();
  prompter.join();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tokens, w.Ref("delta", 0, long_prompt, 240).tokens);
  for (auto& t : decoders) t.join();

  std::lock_guard<std::mutex> lock(log.mu);
  int prefill_steps_beside_decodes = 0;
  int64_t prompt_tokens = 0;
  for (size_t i = 0; i < log.steps.size(); ++i) {
    const StepInfo& s = log.steps[i];
    const int64_t decodes = s.sequences - s.prefill_sequences;
    EXPECT_LE(s.tokens, std::max<int64_t>(32, decodes + 8)) << "step " << s.step;
    if (i >= before && s.prefill_sequences > 0) {
      prompt_tokens += s.tokens - decodes;
      if (decodes > 0) ++prefill_steps_beside_decodes;
    }
  }
  // 200 prompt tokens at <= 29 a step beside 3 decodes: at least 7 steps, each also decoding.
  EXPECT_EQ(prompt_tokens, 200);
  EXPECT_GE(prefill_steps_beside_decodes, 7);
}

// Without chunking the same prompt runs in one step (the old behaviour, for comparison).
TEST(ChunkedPrefillTest, OffRunsEachPromptWhole) {
  World w;
  StepLog log;
  auto rt = w.MakeRuntime(Options(0, &log));
  ASSERT_TRUE(rt->Generate("delta", std::nullopt, Greedy(Text(199, 5), 2)).ok());
  std::lock_guard<std::mutex> lock(log.mu);
  ASSERT_FALSE(log.steps.empty());
  EXPECT_EQ(log.steps.front().tokens, 200);
}

TEST(ChunkedPrefillTest, NegativeBudgetIsRejected) {
  World w;
  auto rt = Runtime::Create(w.model.get(), &w.tokenizer, &w.source, Options(-1));
  ASSERT_FALSE(rt.ok());
  EXPECT_EQ(rt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(rt.status().message().find("--max-step-tokens"), std::string::npos) << rt.status();
}

}  // namespace
}  // namespace tessera::runtime
