#include "core/train/auto_hparams.h"

#include <cmath>

#include "gtest/gtest.h"

namespace tessera::train {
namespace {

const AutoModelShape kTiny{192, 4, 16, 4};  // builtin:tiny

TEST(AutoHparamsTest, SmallDatasetGetsSmallBatchesAndTheStepFloor) {
  ResolvedHparams h = ResolveHparams({100, 1500}, kTiny, {});
  EXPECT_EQ(h.batch_size, 4);     // pow2_floor(100 / 32) = 2 -> clamped to 4
  EXPECT_EQ(h.max_steps, 500);    // 12 epochs = 300 steps -> the floor
  EXPECT_NEAR(h.learning_rate, 3e-3 * std::sqrt(4.0 / 16.0), 1e-12);
  EXPECT_EQ(h.warmup_steps, 25);  // ceil(500 / 20)
  EXPECT_DOUBLE_EQ(h.relevance_threshold, 0.4);  // few tokens: the floor
  EXPECT_EQ(h.max_experts, 13);   // ceil(0.4 * 64 / 2)
  EXPECT_EQ(h.eval_every, 20);    // ceil(500 / 25)
  EXPECT_EQ(h.early_stopping_patience, 5);
  EXPECT_EQ(h.auto_fields.size(), 6u);
}

TEST(AutoHparamsTest, MediumDatasetScalesStepsWithEpochs) {
  ResolvedHparams h = ResolveHparams({1000, 20000}, kTiny, {});
  EXPECT_EQ(h.batch_size, 16);  // pow2_floor(31) = 16
  EXPECT_EQ(h.max_steps, 750);  // ceil(12 * 1000 / 16)
  EXPECT_NEAR(h.learning_rate, 3e-3, 1e-12);
  EXPECT_EQ(h.warmup_steps, 38);
  EXPECT_NEAR(h.relevance_threshold, 0.4 + 0.1 * std::log2(20000.0 / 16384.0), 1e-12);
  EXPECT_EQ(h.max_experts, static_cast<int64_t>(std::ceil(h.relevance_threshold * 32)));
}

TEST(AutoHparamsTest, LargeDatasetHitsTheCapsAndGrowsTheExpertBudget) {
  ResolvedHparams h = ResolveHparams({100000, 16384LL * 64}, kTiny, {});
  EXPECT_EQ(h.batch_size, 16);
  EXPECT_EQ(h.max_steps, 3000);
  EXPECT_EQ(h.eval_every, 100);
  EXPECT_DOUBLE_EQ(h.relevance_threshold, 0.9);  // 0.4 + 0.6 -> capped
  EXPECT_EQ(h.max_experts, 29);                  // ceil(0.9 * 32)
  // The budget never shrinks as the data grows.
  int64_t prev = 0;
  for (int64_t tokens = 1000; tokens < (1LL << 26); tokens *= 2) {
    ResolvedHparams g = ResolveHparams({tokens / 20, tokens}, kTiny, {});
    EXPECT_GE(g.max_experts, prev) << tokens;
    prev = g.max_experts;
  }
}

// The rule's outputs on datasets of 100, 1k, 10k and 100k examples with short (6 loss tokens, 20
// tokens per example) and long (24 loss tokens, 40 per example) completions.
TEST(AutoHparamsTest, DatasetsOfEverySizeAndCompletionLength) {
  struct Case {
    int64_t n, loss_per_example, tokens_per_example;
    int64_t batch, steps, warmup;
    double epochs;
    int64_t max_experts, eval_every;
  };
  const Case cases[] = {
      {100, 6, 20, 4, 500, 25, 12, 13, 20},        // 12 epochs = 300 steps: the floor
      {100, 24, 40, 4, 900, 45, 36, 13, 36},       // 3x the epochs for 4x the completion (capped)
      {1000, 6, 20, 16, 750, 38, 12, 14, 30},
      {1000, 24, 40, 16, 2250, 113, 36, 17, 90},
      {10000, 6, 20, 16, 3000, 150, 12, 25, 100},  // the step cap
      {10000, 24, 40, 16, 3000, 150, 36, 28, 100},
      {100000, 6, 20, 16, 3000, 150, 12, 29, 100},
      {100000, 24, 40, 16, 3000, 150, 36, 29, 100},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << c.n << " examples, " << c.loss_per_example << " loss tokens each");
    const int64_t tokens = c.n * c.tokens_per_example;
    ResolvedHparams h = ResolveHparams({c.n, tokens, c.n * c.loss_per_example}, kTiny, {});
    EXPECT_EQ(h.batch_size, c.batch);
    EXPECT_DOUBLE_EQ(h.epochs, c.epochs);
    EXPECT_EQ(h.max_steps, c.steps);
    EXPECT_EQ(h.warmup_steps, c.warmup);
    EXPECT_NEAR(h.learning_rate, 3e-3 * std::sqrt(c.batch / 16.0), 1e-12);
    const double p = std::clamp(0.4 + 0.1 * std::log2(tokens / 16384.0), 0.4, 0.9);
    EXPECT_NEAR(h.relevance_threshold, p, 1e-12);
    EXPECT_EQ(h.max_experts, c.max_experts);
    EXPECT_EQ(h.eval_every, c.eval_every);
  }
  // Longer completions never get fewer steps; up to 8 loss tokens (or unknown) they change nothing.
  int64_t prev = 0;
  for (int64_t per = 1; per <= 40; ++per) {
    ResolvedHparams h = ResolveHparams({1000, 40000, 1000 * per}, kTiny, {});
    EXPECT_GE(h.max_steps, prev) << per;
    if (per <= 8) EXPECT_EQ(h.max_steps, 750) << per;
    prev = h.max_steps;
  }
  EXPECT_EQ(ResolveHparams({1000, 40000}, kTiny, {}).max_steps, 750);
}

TEST(AutoHparamsTest, WiderModelsGetASmallerLearningRate) {
  ResolvedHparams tiny = ResolveHparams({1000, 20000}, kTiny, {});
  ResolvedHparams wide = ResolveHparams({1000, 20000}, {768, 4, 16, 4}, {});
  EXPECT_NEAR(wide.learning_rate, tiny.learning_rate * 0.5, 1e-12);  // sqrt(192 / 768)
}

TEST(AutoHparamsTest, ExplicitValuesOverrideAndFeedTheRest) {
  HparamRequest r;
  r.batch_size = 8;
  r.learning_rate = 7e-4;
  r.max_experts = 16;
  ResolvedHparams h = ResolveHparams({1000, 20000}, kTiny, r);
  EXPECT_EQ(h.batch_size, 8);
  EXPECT_DOUBLE_EQ(h.learning_rate, 7e-4);
  EXPECT_EQ(h.max_experts, 16);
  EXPECT_EQ(h.max_steps, 1500);  // 12 epochs at the explicit batch size
  EXPECT_EQ(h.auto_fields, (std::vector<std::string>{"max_steps", "warmup_steps", "relevance_threshold"}));
  r.max_steps = 4;
  r.warmup_steps = 2;
  r.relevance_threshold = 0.7;
  h = ResolveHparams({1000, 20000}, kTiny, r);
  EXPECT_EQ(h.max_steps, 4);
  EXPECT_EQ(h.warmup_steps, 2);
  EXPECT_DOUBLE_EQ(h.relevance_threshold, 0.7);
  EXPECT_TRUE(h.auto_fields.empty());
  EXPECT_EQ(h.eval_every, 10);
}

TEST(AutoHparamsTest, WarmupIsCappedAtMaxSteps) {
  HparamRequest r;
  r.max_steps = 3;
  EXPECT_EQ(ResolveHparams({10, 100}, kTiny, r).warmup_steps, 1);
  r.warmup_steps = 10;
  EXPECT_EQ(ResolveHparams({10, 100}, kTiny, r).warmup_steps, 3);
}

}  // namespace
}  // namespace tessera::train
