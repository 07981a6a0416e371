// Token logprobs (core/runtime/logprobs.h): the helpers against a naive softmax, and the runtime's
// reported values against an independent reference: Model::ScoreTokens, a separate whole-sequence
// forward without a KV cache, gives log p(token | BOS + prompt + earlier tokens) for the sampled token
// and for each reported alternative put in its place.
#include "core/runtime/logprobs.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "tests/core/runtime/runtime_test_util.h"

namespace tessera::runtime {
namespace {

using testing::World;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

TEST(LogprobsTest, LogSumExpMatchesNaiveAndIsStable) {
  std::vector<float> row = {1.5f, -2.0f, 0.25f, 3.0f};
  double naive = 0;
  for (float v : row) naive += std::exp(static_cast<double>(v));
  EXPECT_NEAR(LogSumExp(row), std::log(naive), 1e-9);
  // Large logits overflow exp() when not shifted.
  std::vector<float> big = {1000.0f, 1000.0f};
  EXPECT_NEAR(LogSumExp(big), 1000.0 + std::log(2.0), 1e-6);
  std::vector<float> with_inf = {kNegInf, 0.0f, kNegInf};
  EXPECT_NEAR(LogSumExp(with_inf), 0.0, 1e-12);
  std::vector<float> all_inf = {kNegInf, kNegInf};
  EXPECT_EQ(LogSumExp(all_inf), kNegInf);
}

TEST(LogprobsTest, TopAlternativesSkipMaskedIdsAndSortByProbability) {
  // Raw row: id 0 is the most likely but masked (never sampled): it counts in the normalizer only.
  std::vector<float> raw = {5.0f, 1.0f, 2.0f, 2.0f, -1.0f};
  std::vector<float> masked = raw;
  masked[0] = kNegInf;
  const double log_z = LogSumExp(raw);
  TokenLogprob t = TokenLogprobOf(masked, log_z, 4, 3);
  EXPECT_EQ(t.id, 4);
  EXPECT_NEAR(t.logprob, -1.0 - log_z, 1e-6);
  ASSERT_EQ(t.top.size(), 3u);
  EXPECT_EQ(t.top[0].first, 2);  // tie with 3: lower id first
  EXPECT_EQ(t.top[1].first, 3);
  EXPECT_EQ(t.top[2].first, 1);
  EXPECT_NEAR(t.top[0].second, 2.0 - log_z, 1e-6);
  EXPECT_NEAR(t.top[2].second, 1.0 - log_z, 1e-6);
  // More alternatives asked than ids that can be sampled: only the finite ones.
  EXPECT_EQ(TokenLogprobOf(masked, log_z, 1, 20).top.size(), 4u);
  EXPECT_TRUE(TokenLogprobOf(masked, log_z, 1, 0).top.empty());
}

// log p(next | ids) by a fresh whole-sequence forward (no KV cache, no sampler).
double ReferenceLogprob(const World& w, const ExpertOverlay* overlay, std::vector<int32_t> ids, int32_t next) {
  ids.push_back(next);
  SequenceInput in{ids, overlay, nullptr};
  std::vector<std::vector<float>> lp = w.model->ScoreTokens(absl::MakeConstSpan(&in, 1)).value();
  return lp[0].back();
}

void CheckAgainstReference(const World& w, const ExpertOverlay* overlay, const std::string& prompt,
                           const GenerateResult& got, int top) {
  ASSERT_EQ(got.logprobs.size(), got.tokens.size());
  std::vector<int32_t> context = {w.tokenizer.bos_id()};
  for (int32_t id : w.tokenizer.Encode(prompt)) context.push_back(id);
  for (size_t i = 0; i < got.tokens.size(); ++i) {
    const TokenLogprob& t = got.logprobs[i];
    EXPECT_EQ(t.id, got.tokens[i]);
    EXPECT_LT(t.logprob, 0.0f);
    EXPECT_NEAR(t.logprob, ReferenceLogprob(w, overlay, context, t.id), 2e-4) << "token " << i;
    ASSERT_EQ(static_cast<int>(t.top.size()), top);
    for (size_t k = 0; k < t.top.size(); ++k) {
      if (k > 0) EXPECT_GE(t.top[k - 1].second, t.top[k].second);
      EXPECT_NEAR(t.top[k].second, ReferenceLogprob(w, overlay, context, t.top[k].first), 2e-4)
          << "token " << i << " alternative " << k;
      EXPECT_NE(t.top[k].first, w.tokenizer.bos_id());  // masked ids are never offered
      EXPECT_NE(t.top[k].first, w.tokenizer.pad_id());
    }
    // The sampled token is one of the alternatives or less likely than all of them.
    if (!t.top.empty() && t.top.back().second > t.logprob + 1e-6f) {
      for (const auto& [id, lp] : t.top) EXPECT_NE(id, t.id);
    }
    context.push_back(t.id);
  }
}

TEST(LogprobsTest, RuntimeReportsTheModelsLogSoftmaxBeforeTemperature) {
  World w;
  RuntimeOptions o;
  o.kv_capacity = 96;
  std::unique_ptr<Runtime> rt = w.MakeRuntime(o);
  GenerateParams p;
  p.prompt = "hello there";
  p.max_tokens = 6;
  p.temperature = 1.7f;  // a sharp change of the sampling distribution: the reported values ignore it
  p.top_p = 0.9f;
  p.seed = 7;
  p.logprobs = true;
  p.top_logprobs = 3;
  absl::StatusOr<GenerateResult> got = rt->Generate("acme", 1, p);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_FALSE(got->tokens.empty());
  CheckAgainstReference(w, w.Overlay("acme", 1), p.prompt, *got, 3);

  // Asking for logprobs does not change what is generated.
  p.logprobs = false;
  absl::StatusOr<GenerateResult> plain = rt->Generate("acme", 1, p);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->tokens, got->tokens);
  EXPECT_TRUE(plain->logprobs.empty());

  // Greedy: the sampled token is the most likely one.
  p.logprobs = true;
  p.temperature = 0;
  p.top_logprobs = 1;
  absl::StatusOr<GenerateResult> greedy = rt->Generate("delta", std::nullopt, p);
  ASSERT_TRUE(greedy.ok());
  CheckAgainstReference(w, nullptr, p.prompt, *greedy, 1);
  for (const TokenLogprob& t : greedy->logprobs) {
    EXPECT_EQ(t.top[0].first, t.id);
    EXPECT_FLOAT_EQ(t.top[0].second, t.logprob);
  }

  p.top_logprobs = -1;
  EXPECT_EQ(rt->Generate("delta", std::nullopt, p).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LogprobsTest, StreamedLogprobsConcatenateToTheResultAndPrecedeTheirText) {
  World w;
  RuntimeOptions o;
  o.kv_capacity = 96;
  std::unique_ptr<Runtime> rt = w.MakeRuntime(o);
  GenerateParams p;
  p.prompt = "abc";
  p.max_tokens = 12;
  p.temperature = 1.0f;
  p.seed = 3;
  p.logprobs = true;
  p.top_logprobs = 2;
  // A first run finds a stop string that cuts the text in its middle (held-back tokens).
  absl::StatusOr<GenerateResult> free_run = rt->Generate("beta", 1, p);
  ASSERT_TRUE(free_run.ok());
  ASSERT_GE(free_run->text.size(), 6u);
  p.stop = {free_run->text.substr(4, 2)};

  std::vector<TokenLogprob> streamed;
  std::string text;
  size_t tokens_before_text = 0;  // tokens delivered when the last non-empty delta arrived
  p.on_logprobs = [&](std::vector<TokenLogprob> lp) {
    EXPECT_FALSE(lp.empty());
    streamed.insert(streamed.end(), lp.begin(), lp.end());
  };
  absl::StatusOr<GenerateResult> got = rt->Generate("beta", 1, p, [&](std::string_view delta) {
    text += delta;
    tokens_before_text = streamed.size();
    // Every byte released so far was produced by tokens already delivered.
    EXPECT_LE(text.size(), w.tokenizer.Decode(std::vector<int32_t>(
                               free_run->tokens.begin(), free_run->tokens.begin() + streamed.size())).size());
    return true;
  });
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->finish_reason, FinishReason::kStop);
  EXPECT_EQ(text, got->text);
  ASSERT_EQ(streamed.size(), got->logprobs.size());
  for (size_t i = 0; i < streamed.size(); ++i) {
    EXPECT_EQ(streamed[i].id, got->logprobs[i].id);
    EXPECT_EQ(streamed[i].logprob, got->logprobs[i].logprob);
    EXPECT_EQ(streamed[i].top, got->logprobs[i].top);
  }
  EXPECT_LE(tokens_before_text, streamed.size());
  CheckAgainstReference(w, w.Overlay("beta", 1), p.prompt, *got, 2);
}

}  // namespace
}  // namespace tessera::runtime
