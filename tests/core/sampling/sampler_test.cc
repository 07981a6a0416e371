#include "core/sampling/sampler.h"

#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "gtest/gtest.h"

namespace tessera {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Reference: softmax over `ids` of logits / T (a plain loop).
std::map<int, double> Softmax(const std::vector<float>& logits, float t, const std::set<int>& ids) {
  double mx = -1e300, z = 0;
  for (int i : ids) mx = std::max(mx, static_cast<double>(logits[i]) / t);
  std::map<int, double> p;
  for (int i : ids) z += (p[i] = std::exp(static_cast<double>(logits[i]) / t - mx));
  for (auto& [i, v] : p) v /= z;
  return p;
}

std::map<int, double> Frequencies(Sampler& s, const std::vector<float>& logits, int n) {
  std::map<int, double> f;
  for (int i = 0; i < n; ++i) f[s.Sample(logits)] += 1.0 / n;
  return f;
}

// |freq - p| within 5 standard errors of a binomial proportion (plus a hair for p ~ 0).
void ExpectMatches(const std::map<int, double>& freq, const std::map<int, double>& p, int n) {
  for (const auto& [id, f] : freq) EXPECT_TRUE(p.count(id)) << "sampled filtered token " << id;
  for (const auto& [id, pi] : p) {
    const double got = freq.count(id) ? freq.at(id) : 0.0;
    EXPECT_NEAR(got, pi, 5 * std::sqrt(pi * (1 - pi) / n) + 1e-4) << "token " << id;
  }
}

TEST(Rng, SplitMixAndXoshiroAreTheSpecifiedGenerators) {
  uint64_t state = 0;
  EXPECT_EQ(SplitMix64(state), 0xE220A8397B1DCDAFull);  // published splitmix64 output for seed 0
  EXPECT_EQ(SplitMix64(state), 0x6E789E6AA1B965F4ull);
  Xoshiro256 a(42), b(42), c(43);
  for (int i = 0; i < 100; ++i) {
    uint64_t x = a.Next();
    EXPECT_EQ(x, b.Next());
    EXPECT_NE(x, c.Next());
  }
  double sum = 0;
  for (int i = 0; i < 100000; ++i) {
    double u = a.NextDouble();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 100000, 0.5, 0.005);
}

TEST(Sampler, ValidateNamesTheBadField) {
  EXPECT_TRUE(Sampler::Validate({}).ok());
  EXPECT_TRUE(Sampler::Validate({0.7f, 40, 0.9f, 1}).ok());
  EXPECT_TRUE(Sampler::Validate({1.0f, 0, 1.0f, 0}).ok());
  struct Bad { SamplingParams p; const char* field; };
  for (const Bad& b : {Bad{{-0.1f, 0, 1.0f, 0}, "temperature"}, Bad{{kNaN, 0, 1.0f, 0}, "temperature"},
                       Bad{{kInf, 0, 1.0f, 0}, "temperature"}, Bad{{1.0f, -1, 1.0f, 0}, "top_k"},
                       Bad{{1.0f, 0, 0.0f, 0}, "top_p"}, Bad{{1.0f, 0, 1.5f, 0}, "top_p"},
                       Bad{{1.0f, 0, -0.5f, 0}, "top_p"}, Bad{{1.0f, 0, kNaN, 0}, "top_p"}}) {
    absl::Status s = Sampler::Validate(b.p);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << b.field;
    EXPECT_NE(s.message().find(b.field), std::string::npos) << s;
    EXPECT_FALSE(Sampler::Create(b.p).ok());
  }
}

TEST(Sampler, GreedyIsArgmaxWithTiesToLowestIdAndIgnoresNaN) {
  Sampler s({});
  EXPECT_EQ(s.Sample(std::vector<float>{0.1f, 3.0f, -2.0f, 3.0f}), 1);
  EXPECT_EQ(s.Sample(std::vector<float>{kNaN, -5.0f, kNaN}), 1);
  EXPECT_EQ(s.Sample(std::vector<float>{-kInf, -kInf}), 0);
  EXPECT_EQ(s.Sample(std::vector<float>{}), -1);
  EXPECT_EQ(s.Sample(std::vector<float>{2.0f, 2.0f, 2.0f}), 0);
  // top_k == 1 is greedy at any temperature.
  Sampler k1({5.0f, 1, 1.0f, 9});
  for (int i = 0; i < 50; ++i) EXPECT_EQ(k1.Sample(std::vector<float>{0.0f, 0.5f, 0.49f}), 1);
}

TEST(Sampler, FrequenciesFollowSoftmaxOverTemperature) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f, -3.0f};
  const int n = 200000;
  for (float t : {0.5f, 1.0f, 2.0f}) {
    Sampler s({t, 0, 1.0f, 1234});
    ExpectMatches(Frequencies(s, logits, n), Softmax(logits, t, {0, 1, 2, 3, 4, 5}), n);
  }
}

TEST(Sampler, TopKNeverReturnsFilteredTokensAndRenormalizes) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = std::sin(i * 1.7f) * 3.0f;  // distinct values
  std::vector<int> order(50);
  for (int i = 0; i < 50; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  const std::set<int> top5(order.begin(), order.begin() + 5);
  const int n = 100000;
  Sampler s({1.3f, 5, 1.0f, 77});
  ExpectMatches(Frequencies(s, logits, n), Softmax(logits, 1.3f, top5), n);
}

TEST(Sampler, TopKTiesGoToLowerIds) {
  Sampler s({1.0f, 2, 1.0f, 5});
  std::set<int> seen;
  for (int i = 0; i < 2000; ++i) seen.insert(s.Sample(std::vector<float>{1.0f, 3.0f, 1.0f, 1.0f}));
  EXPECT_EQ(seen, (std::set<int>{0, 1}));
}

TEST(Sampler, TopPKeepsTheSmallestNucleusReachingP) {
  // Probabilities 0.5, 0.3, 0.15, 0.05 (shuffled ids).
  const std::vector<float> logits = {std::log(0.15f), std::log(0.5f), std::log(0.05f), std::log(0.3f)};
  const int n = 100000;
  {
    Sampler s({1.0f, 0, 0.75f, 3});  // 0.5 < 0.75 <= 0.8: keep ids 1, 3
    ExpectMatches(Frequencies(s, logits, n), Softmax(logits, 1.0f, {1, 3}), n);
  }
  {
    Sampler s({1.0f, 0, 0.9f, 3});  // 0.8 < 0.9 <= 0.95: keep ids 1, 3, 0
    ExpectMatches(Frequencies(s, logits, n), Softmax(logits, 1.0f, {0, 1, 3}), n);
  }
  {
    Sampler s({1.0f, 0, 0.2f, 3});  // the top token alone already reaches p
    for (int i = 0; i < 1000; ++i) EXPECT_EQ(s.Sample(logits), 1);
  }
  {
    Sampler s({1.0f, 2, 0.99f, 3});  // top-k first, then top-p over the renormalized pair
    ExpectMatches(Frequencies(s, logits, n), Softmax(logits, 1.0f, {1, 3}), n);
  }
  {
    // Temperature applies before the nucleus: at T=2 probabilities flatten (~0.39, 0.30, 0.21, 0.12),
    // so p = 0.75 now needs three tokens.
    Sampler s({2.0f, 0, 0.75f, 3});
    ExpectMatches(Frequencies(s, logits, n), Softmax(logits, 2.0f, {0, 1, 3}), n);
  }
}

TEST(Sampler, NonFiniteLogitsAndExtremeTemperatures) {
  Sampler s({1.0f, 0, 1.0f, 11});
  for (int i = 0; i < 2000; ++i) {
    int id = s.Sample(std::vector<float>{-kInf, 0.0f, kNaN, 0.0f});
    EXPECT_TRUE(id == 1 || id == 3) << id;
  }
  // A tiny temperature is argmax without overflow; exact ties at the max split between them.
  Sampler cold({1e-30f, 0, 1.0f, 11});
  std::set<int> seen;
  for (int i = 0; i < 500; ++i) seen.insert(cold.Sample(std::vector<float>{-100.0f, 5.0f, 4.999f, 5.0f}));
  EXPECT_EQ(seen, (std::set<int>{1, 3}));
  Sampler hot({1e6f, 0, 1.0f, 11});
  const int n = 40000;
  ExpectMatches(Frequencies(hot, {0.0f, 10.0f, -10.0f, 3.0f}, n),
                {{0, 0.25}, {1, 0.25}, {2, 0.25}, {3, 0.25}}, n);
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDifferentTokens) {
  std::vector<float> logits(300);
  for (int i = 0; i < 300; ++i) logits[i] = std::cos(i * 0.37f);
  auto run = [&](uint64_t seed) {
    Sampler s({0.9f, 50, 0.95f, seed});
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s.Sample(logits));
    return out;
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

}  // namespace
}  // namespace tessera
