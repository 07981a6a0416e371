// Parity with HF transformers: for every fixture under tests/fixtures/hf/ (see its README), load
// config.json + model.safetensors, run each expected.json sequence alone and compare
//   logprobs[s][j]  (log p(seq[j+1] | seq[..j]))  and  logits_last[s]  (raw logits at T-1)
// with the float64 reference: |got - want| <= 1e-4 * max(1, |want|) per value (float32 forward).
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/model/config.h"
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
  EXPECT_GE(Variants().size(), 3u) << "no fixtures under " << FixtureRoot();
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

INSTANTIATE_TEST_SUITE_P(Fixtures, HfParity, ::testing::ValuesIn(Variants()),
                         [](const auto& info) { return info.param; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(HfParity);

}  // namespace
}  // namespace tessera
