// Context sizing (PlanContext) and the runtime's use of it: a context beyond the old fixed 1024
// positions, prompts that do not fit (INVALID_ARGUMENT with the numbers and the flag that raises it),
// and completions cut at the capacity.
#include "core/runtime/context_plan.h"

#include "core/model/kv_cache.h"
#include "gtest/gtest.h"
#include "tests/core/runtime/runtime_test_util.h"

namespace tessera::runtime {
namespace {

using testing::RefGenerate;
using testing::SmallConfig;

ModelConfig LongConfig(int64_t context) {
  ModelConfig c = SmallConfig();
  c.max_position_embeddings = context;
  return c;
}

TEST(PlanContext, TheSmallestOfModelCapAndBudgetWins) {
  const ModelConfig c = LongConfig(4096);
  const int64_t per = KvCache::BytesPerPosition(c, DType::kF32);
  EXPECT_EQ(per, 2 * c.num_layers * c.num_kv_heads * c.head_dim * 4);

  ContextPlan model = *PlanContext(c, DType::kF32, 16, 0, kDefaultKvMemoryBytes);
  EXPECT_EQ(model.capacity, 4096);
  EXPECT_EQ(model.limited_by, ContextPlan::Limit::kModel);
  EXPECT_EQ(model.pool_bytes, 16 * 4096 * per);
  EXPECT_NE(model.RaiseHint().find("max_position_embeddings (4096)"), std::string::npos) << model.RaiseHint();

  ContextPlan capped = *PlanContext(c, DType::kF32, 16, 1500, kDefaultKvMemoryBytes);
  EXPECT_EQ(capped.capacity, 1500);
  EXPECT_EQ(capped.limited_by, ContextPlan::Limit::kMaxContext);
  EXPECT_NE(capped.RaiseHint().find("--max-context"), std::string::npos) << capped.RaiseHint();

  // A cap above the model's context is clamped, and the log line says so.
  ContextPlan above = *PlanContext(c, DType::kF32, 16, 10000, kDefaultKvMemoryBytes);
  EXPECT_EQ(above.capacity, 4096);
  EXPECT_NE(above.Describe().find("exceeds the model's max_position_embeddings 4096"), std::string::npos)
      << above.Describe();

  // The pool is paged and shared: a budget of two full contexts keeps the whole context for each
  // request, with 2 of the 16 slots at full length at once (shorter requests share the rest).
  ContextPlan shared = *PlanContext(c, DType::kF32, 16, 0, 2 * 4096 * per);
  EXPECT_EQ(shared.capacity, 4096);
  EXPECT_EQ(shared.limited_by, ContextPlan::Limit::kModel);
  EXPECT_EQ(shared.num_blocks, 2 * 4096 / kDefaultKvBlockTokens);
  EXPECT_EQ(shared.pool_bytes, 2 * 4096 * per);
  EXPECT_NE(shared.Describe().find("(2 at full context)"), std::string::npos) << shared.Describe();

  // A budget for 3000 positions in all: the context is reduced to the whole blocks that fit, and said so.
  ContextPlan memory = *PlanContext(c, DType::kF32, 4, 0, 3000 * per + per - 1);
  EXPECT_EQ(memory.capacity, 3000 / 16 * 16);
  EXPECT_EQ(memory.limited_by, ContextPlan::Limit::kMemory);
  EXPECT_LE(memory.pool_bytes, 3000 * per + per - 1);
  EXPECT_NE(memory.Describe().find("reduced from 4096 to what --kv-memory-bytes holds"), std::string::npos)
      << memory.Describe();
  EXPECT_NE(memory.RaiseHint().find("--kv-memory-bytes"), std::string::npos) << memory.RaiseHint();

  // bf16 caches take half the bytes, so the same budget holds twice the positions (up to the model's).
  EXPECT_EQ(PlanContext(c, DType::kBF16, 4, 0, 1000 * per)->capacity, 2000);
  // Blocks of 64: the budget is counted in whole blocks.
  EXPECT_EQ(PlanContext(c, DType::kF32, 4, 0, 1000 * per, 64)->capacity, 960);

  // Not even one block of two positions: refused with the numbers and the flags.
  absl::StatusOr<ContextPlan> tiny = PlanContext(c, DType::kF32, 16, 0, per);
  EXPECT_EQ(tiny.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(tiny.status().message().find("--kv-memory-bytes"), std::string::npos) << tiny.status();
  EXPECT_NE(tiny.status().message().find(std::to_string(4096 * per)), std::string::npos) << tiny.status();
  EXPECT_EQ(PlanContext(c, DType::kF32, 16, 0, kDefaultKvMemoryBytes, 0).status().code(),
            absl::StatusCode::kInvalidArgument);

  EXPECT_EQ(PlanContext(c, DType::kF32, 16, 1, kDefaultKvMemoryBytes).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanContext(c, DType::kF32, 16, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanContext(c, DType::kF32, 0, 0, kDefaultKvMemoryBytes).status().code(),
            absl::StatusCode::kInvalidArgument);
}

struct LongWorld {
  explicit LongWorld(int64_t context) : config(LongConfig(context)) {
    model = Model::Create(config, ModelWeights::RandomInit(config, 77, be.get()).value(), be.get()).value();
    source.SetLive("acme", 0);
  }
  std::unique_ptr<Runtime> Make(const ContextPlan& plan, int max_batch) {
    RuntimeOptions o;
    o.max_batch = max_batch;
    o.kv_capacity = plan.capacity;
    o.kv_capacity_hint = plan.RaiseHint();
    o.kv_block_tokens = plan.block_tokens;
    o.kv_blocks = plan.num_blocks;
    return Runtime::Create(model.get(), &tokenizer, &source, o).value();
  }
  std::unique_ptr<Backend> be = MakeCpuBackend();
  ModelConfig config;
  std::unique_ptr<Model> model;
  ByteTokenizer tokenizer;
  testing::MemorySource source;
};

std::string Text(size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s.push_back(static_cast<char>('a' + (i * 7 + i / 13) % 26));
  return s;
}

TEST(RuntimeContext, ServesAPromptLongerThan1024AsTheReferenceDoes) {
  LongWorld w(3000);
  ContextPlan plan = *PlanContext(w.config, DType::kF32, 2, 0, kDefaultKvMemoryBytes);
  ASSERT_EQ(plan.capacity, 3000);
  auto rt = w.Make(plan, 2);
  GenerateParams p;
  p.prompt = Text(2500);
  p.max_tokens = 5;
  absl::StatusOr<GenerateResult> r = rt->Generate("acme", std::nullopt, p);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->prompt_tokens, 2501);
  const testing::RefOutput ref = RefGenerate(*w.model, nullptr, p, plan.capacity);
  EXPECT_EQ(r->tokens, ref.tokens);
  EXPECT_EQ(r->completion_tokens, static_cast<int>(ref.tokens.size()));

  absl::StatusOr<ScoreResult> s = rt->Score("acme", std::nullopt, Text(2999), false);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->num_tokens, 2999);
}

TEST(RuntimeContext, APromptThatDoesNotFitIsRefusedWithTheNumbersAndTheFlag) {
  LongWorld w(3000);
  struct Case {
    ContextPlan plan;
    std::string flag;
  };
  const int64_t per = KvCache::BytesPerPosition(w.config, DType::kF32);
  std::vector<Case> cases = {{*PlanContext(w.config, DType::kF32, 2, 0, kDefaultKvMemoryBytes), "max_position_embeddings"},
                             {*PlanContext(w.config, DType::kF32, 2, 1200, kDefaultKvMemoryBytes), "--max-context"},
                             {*PlanContext(w.config, DType::kF32, 2, 0, 1200 * per), "--kv-memory-bytes"}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.flag);
    auto rt = w.Make(c.plan, 2);
    const int64_t cap = c.plan.capacity;
    GenerateParams p;
    p.max_tokens = 50;
    p.prompt = Text(static_cast<size_t>(cap));  // BOS + cap bytes: one too many
    absl::Status too_long = rt->Generate("acme", std::nullopt, p).status();
    EXPECT_EQ(too_long.code(), absl::StatusCode::kInvalidArgument);
    for (const std::string& want : {std::to_string(cap + 1) + " tokens", std::to_string(cap) + " positions", c.flag}) {
      EXPECT_NE(too_long.message().find(want), std::string::npos) << want << " in " << too_long;
    }
    absl::Status score = rt->Score("acme", std::nullopt, p.prompt, false).status();
    EXPECT_EQ(score.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(score.message().find(c.flag), std::string::npos) << score;

    // A prompt that fits with room for only some of max_tokens: the completion stops at the capacity.
    p.prompt = Text(static_cast<size_t>(cap - 10));
    absl::StatusOr<GenerateResult> cut = rt->Generate("acme", std::nullopt, p);
    ASSERT_TRUE(cut.ok()) << cut.status();
    EXPECT_EQ(cut->prompt_tokens + cut->completion_tokens, cap + 1) << "the last token needs no cache slot";
    EXPECT_EQ(cut->finish_reason, FinishReason::kLength);
  }
}

}  // namespace
}  // namespace tessera::runtime
