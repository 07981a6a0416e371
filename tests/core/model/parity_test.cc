// Parity with HF transformers: for every fixture under tests/fixtures/hf/ (see its README), load
// config.json + model.safetensors, run each expected.json sequence alone and compare
//   logprobs[s][j]  (log p(seq[j+1] | seq[..j]))  and  logits_last[s]  (raw logits at T-1)
// with the float64 reference: |got - want| <= 1e-4 * max(1, |want|) per value (float32 forward).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/model/config.h"
#include "core/model/kv_cache.h"
#include "core/model/model.h"
#include "core/model/weights.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

std::filesystem::path FixtureRoot() {
  const char* src = std::getenv("TESSERA_SOURCE_DIR");
  return std::filesystem::path(src != nullptr ? src : ".") / "tests" / "fixtures" / "hf";
}

std::vector<std::string> Variants() {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(FixtureRoot(), ec)) {
    if (e.is_directory() && std::filesystem::exists(e.path() / "expected.json")) {
      out.push_back(e.path().filename().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

double Tol(double want) { return 1e-4 * std::max(1.0, std::abs(want)); }

TEST(HfParityTest, FixturesExist) {
  // Guards against the parametrized test silently running zero cases.
  EXPECT_GE(Variants().size(), 10u) << "no fixtures under " << FixtureRoot();
}

class HfParity : public ::testing::TestWithParam<std::string> {};

TEST_P(HfParity, LogprobsAndLastLogitsMatch) {
  const std::filesystem::path dir = FixtureRoot() / GetParam();
  auto config = ModelConfig::FromFile(dir.string());
  ASSERT_TRUE(config.ok()) << config.status();
  std::ifstream in(dir / "expected.json");
  nlohmann::json expected = nlohmann::json::parse(in);
  EXPECT_EQ(ModelFamilyName(config->family), expected["family"].get<std::string>());
  EXPECT_EQ(config->tie_word_embeddings, expected["tie_word_embeddings"].get<bool>());
  EXPECT_EQ(config->norm_topk_prob, expected["norm_topk_prob"].get<bool>());
  EXPECT_FLOAT_EQ(config->rope_theta, expected["rope_theta"].get<float>());

  auto backend = MakeCpuBackend();
  auto weights = ModelWeights::LoadFromPath(*config, dir.string(), backend.get());
  ASSERT_TRUE(weights.ok()) << weights.status();
  auto model = Model::Create(*config, *weights, backend.get());
  ASSERT_TRUE(model.ok()) << model.status();

  const auto& seqs = expected["sequences"];
  ASSERT_GT(seqs.size(), 0u);
  for (size_t s = 0; s < seqs.size(); ++s) {
    std::vector<int32_t> tokens = seqs[s].get<std::vector<int32_t>>();
    SequenceInput batch[1] = {{tokens, nullptr, nullptr}};
    auto scores = (*model)->ScoreTokens(batch);
    ASSERT_TRUE(scores.ok()) << scores.status();
    std::vector<double> want = expected["logprobs"][s].get<std::vector<double>>();
    ASSERT_EQ((*scores)[0].size(), want.size());
    for (size_t j = 0; j < want.size(); ++j) {
      EXPECT_NEAR((*scores)[0][j], want[j], Tol(want[j])) << GetParam() << " seq " << s << " pos " << j;
    }
    auto fwd = (*model)->Forward(batch);
    ASSERT_TRUE(fwd.ok()) << fwd.status();
    std::vector<float> got = backend->ToHostF32(fwd->logits).value();
    std::vector<double> want_logits = expected["logits_last"][s].get<std::vector<double>>();
    ASSERT_EQ(got.size(), want_logits.size());
    for (size_t v = 0; v < got.size(); ++v) {
      EXPECT_NEAR(got[v], want_logits[v], Tol(want_logits[v])) << GetParam() << " seq " << s << " vocab " << v;
    }
  }
}

// expected.json "greedy" (ops/fixtures/make_hf_family_fixtures.py): greedy decoding from `prompt` with a KV
// cache (prefill, then one token per step) gives transformers' 32 tokens; "score": each sequence's sum
// of log-probs (what Score returns) within 1e-4 * max(1, |want|).
TEST_P(HfParity, GreedyDecodeAndScoreMatch) {
  const std::filesystem::path dir = FixtureRoot() / GetParam();
  std::ifstream in(dir / "expected.json");
  nlohmann::json expected = nlohmann::json::parse(in);
  if (!expected.contains("greedy")) GTEST_SKIP() << "fixture without a greedy record";
  auto config = ModelConfig::FromFile(dir.string());
  ASSERT_TRUE(config.ok()) << config.status();
  auto backend = MakeCpuBackend();
  auto model = Model::Create(*config, ModelWeights::LoadFromPath(*config, dir.string(), backend.get()).value(),
                             backend.get());
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<int32_t> prompt = expected["greedy"]["prompt"].get<std::vector<int32_t>>();
  const std::vector<int32_t> want = expected["greedy"]["tokens"].get<std::vector<int32_t>>();
  ASSERT_EQ(want.size(), 32u);
  auto cache = KvCache::Create(*config, static_cast<int64_t>(prompt.size() + want.size()), backend.get());
  ASSERT_TRUE(cache.ok()) << cache.status();
  std::vector<int32_t> got;
  std::vector<int32_t> feed = prompt;
  for (size_t step = 0; step < want.size(); ++step) {
    SequenceInput batch[1] = {{feed, nullptr, cache->get()}};
    auto fwd = (*model)->Forward(batch);
    ASSERT_TRUE(fwd.ok()) << fwd.status();
    std::vector<float> logits = backend->ToHostF32(fwd->logits).value();
    const int32_t next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    got.push_back(next);
    feed = {next};
  }
  EXPECT_EQ(got, want);

  ASSERT_TRUE(expected.contains("score"));
  const auto& seqs = expected["sequences"];
  for (size_t s = 0; s < seqs.size(); ++s) {
    std::vector<int32_t> tokens = seqs[s].get<std::vector<int32_t>>();
    SequenceInput batch[1] = {{tokens, nullptr, nullptr}};
    auto scores = (*model)->ScoreTokens(batch);
    ASSERT_TRUE(scores.ok()) << scores.status();
    double sum = 0;
    for (float x : (*scores)[0]) sum += x;
    const double w = expected["score"][s].get<double>();
    EXPECT_NEAR(sum, w, Tol(w)) << "sequence " << s;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfParity, ::testing::ValuesIn(Variants()),
                         [](const auto& info) { return info.param; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(HfParity);

}  // namespace
}  // namespace tessera
