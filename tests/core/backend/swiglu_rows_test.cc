// SwiGLU element loops (core/backend/cpu/cpu_swiglu_rows.h): every variant this CPU can run against a
// double-precision reference on the same inputs (variants the CPU lacks are skipped with a message), over
// lengths on and off the vector width, gates far into both saturated ends, and non-finite inputs; and
// an element's result not depending on where the call starts.
#include "core/backend/cpu/cpu_swiglu_rows.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/backend/cpu/cpu_small_gemm.h"
#include "gtest/gtest.h"

namespace tessera::cpu {
namespace {

std::vector<float> Random(int64_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

double SigmoidRef(double g) { return 1.0 / (1.0 + std::exp(-g)); }

class SwiGluRowsVariantTest : public ::testing::TestWithParam<SmallGemmIsa> {
 protected:
  void SetUp() override {
    if (!SmallGemmSupports(GetParam())) {
      GTEST_SKIP() << "this CPU lacks the features of the " << IsaName(GetParam()) << " variant (best here: "
                   << IsaName(SmallGemmBestIsa()) << ")";
    }
  }
};

TEST_P(SwiGluRowsVariantTest, MatchesTheReference) {
  const SmallGemmIsa isa = GetParam();
  for (int64_t n : {1, 7, 8, 9, 33, 1000}) {
    std::vector<float> g = Random(n, 1, -12.0f, 12.0f);
    const std::vector<float> u = Random(n, 2, -2.0f, 2.0f), d = Random(n, 3, -2.0f, 2.0f);
    if (n > 4) g[1] = 95.0f, g[2] = -95.0f, g[3] = 0.0f, g[4] = -1.2785f;  // saturated, zero, 1 + g(1-s) ~ 0
    std::vector<float> out(n), dg(n), du(n);
    SwiGluRows(isa, g.data(), u.data(), out.data(), n);
    SwiGluBackwardRows(isa, g.data(), u.data(), d.data(), dg.data(), du.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double s = SigmoidRef(g[i]);
      const double want = g[i] * s * u[i];
      const std::string at = "n=" + std::to_string(n) + " i=" + std::to_string(i) + " g=" + std::to_string(g[i]);
      EXPECT_NEAR(out[i], want, 2e-6 * std::fabs(want) + 1e-37) << "forward " << at;
      // dgate's factor 1 + g (1 - s) cancels near g = -1.28: bound the error by its terms' sizes.
      const double scale_dg = std::fabs(d[i] * u[i] * s) * (1.0 + std::fabs(g[i] * (1.0 - s)));
      EXPECT_NEAR(dg[i], d[i] * u[i] * s * (1.0 + g[i] * (1.0 - s)), 2e-6 * scale_dg + 1e-37) << "dgate " << at;
      const double want_du = d[i] * g[i] * s;
      EXPECT_NEAR(du[i], want_du, 2e-6 * std::fabs(want_du) + 1e-37) << "dup " << at;
    }
  }
}

TEST_P(SwiGluRowsVariantTest, NonFiniteGatesGiveWhatThePortableLoopGives) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  // 11 elements: the vector body and the tail both see the specials.
  const std::vector<float> g = {nan, inf, -inf, 1.0f, -1.0f, 200.0f, -200.0f, nan, inf, -inf, 0.5f};
  const std::vector<float> u(g.size(), 1.5f), d(g.size(), -0.5f);
  const int64_t n = static_cast<int64_t>(g.size());
  std::vector<float> out(n), dg(n), du(n), ref_out(n), ref_dg(n), ref_du(n);
  SwiGluRows(GetParam(), g.data(), u.data(), out.data(), n);
  SwiGluBackwardRows(GetParam(), g.data(), u.data(), d.data(), dg.data(), du.data(), n);
  SwiGluRows(SmallGemmIsa::kPortable, g.data(), u.data(), ref_out.data(), n);
  SwiGluBackwardRows(SmallGemmIsa::kPortable, g.data(), u.data(), d.data(), ref_dg.data(), ref_du.data(), n);
  auto same = [](float a, float b) {
    if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
    if (std::isinf(a) || std::isinf(b) || a == 0.0f || b == 0.0f) return a == b;
    return std::fabs(a - b) <= 2e-6f * std::fabs(b);
  };
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_TRUE(same(out[i], ref_out[i])) << "forward g=" << g[i] << ": " << out[i] << " vs " << ref_out[i];
    EXPECT_TRUE(same(dg[i], ref_dg[i])) << "dgate g=" << g[i] << ": " << dg[i] << " vs " << ref_dg[i];
    EXPECT_TRUE(same(du[i], ref_du[i])) << "dup g=" << g[i] << ": " << du[i] << " vs " << ref_du[i];
  }
}

// ParallelFor splits a tensor anywhere, and a decode step's rows start anywhere: an element's bits must
// not depend on whether it falls in a call's vector body or its tail.
TEST_P(SwiGluRowsVariantTest, AnElementsResultDoesNotDependOnWhereTheCallStarts) {
  const int64_t n = 45;
  const std::vector<float> g = Random(n, 4, -6.0f, 6.0f), u = Random(n, 5, -1.0f, 1.0f), d = Random(n, 6, -1.0f, 1.0f);
  std::vector<float> whole(n), whole_dg(n), whole_du(n);
  SwiGluRows(GetParam(), g.data(), u.data(), whole.data(), n);
  SwiGluBackwardRows(GetParam(), g.data(), u.data(), d.data(), whole_dg.data(), whole_du.data(), n);
  for (int64_t start : {1, 3, 5, 13}) {
    std::vector<float> part(n), part_dg(n), part_du(n);
    SwiGluRows(GetParam(), g.data(), u.data(), part.data(), start);
    SwiGluRows(GetParam(), g.data() + start, u.data() + start, part.data() + start, n - start);
    SwiGluBackwardRows(GetParam(), g.data(), u.data(), d.data(), part_dg.data(), part_du.data(), start);
    SwiGluBackwardRows(GetParam(), g.data() + start, u.data() + start, d.data() + start, part_dg.data() + start,
                       part_du.data() + start, n - start);
    EXPECT_EQ(0, std::memcmp(part.data(), whole.data(), n * sizeof(float))) << "forward, split at " << start;
    EXPECT_EQ(0, std::memcmp(part_dg.data(), whole_dg.data(), n * sizeof(float))) << "dgate, split at " << start;
    EXPECT_EQ(0, std::memcmp(part_du.data(), whole_du.data(), n * sizeof(float))) << "dup, split at " << start;
  }
}

// dgate and dup may alias gate and up (the backward is run in place by the model).
TEST_P(SwiGluRowsVariantTest, BackwardInPlaceEqualsOutOfPlace) {
  const int64_t n = 21;
  std::vector<float> g = Random(n, 7, -4.0f, 4.0f), u = Random(n, 8, -1.0f, 1.0f);
  const std::vector<float> d = Random(n, 9, -1.0f, 1.0f);
  std::vector<float> dg(n), du(n);
  SwiGluBackwardRows(GetParam(), g.data(), u.data(), d.data(), dg.data(), du.data(), n);
  SwiGluBackwardRows(GetParam(), g.data(), u.data(), d.data(), g.data(), u.data(), n);
  EXPECT_EQ(0, std::memcmp(g.data(), dg.data(), n * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(u.data(), du.data(), n * sizeof(float)));
}

INSTANTIATE_TEST_SUITE_P(Variants, SwiGluRowsVariantTest,
                         ::testing::Values(SmallGemmIsa::kPortable, SmallGemmIsa::kAvx2, SmallGemmIsa::kAvx512),
                         [](const ::testing::TestParamInfo<SmallGemmIsa>& info) {
                           return std::string(IsaName(info.param));
                         });

}  // namespace
}  // namespace tessera::cpu
