// Per-row attention inner loops (core/backend/cpu/cpu_attention_rows.h): every variant this CPU can run
// against a double-precision reference on the same inputs (variants the CPU lacks are skipped with a
// message), for f32 and bf16 keys/values, head dims on and off the vector widths, strided rows, and an
// accumulator that already holds values.
#include "core/backend/cpu/cpu_attention_rows.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/backend/cpu/cpu_small_gemm.h"
#include "core/tensor/tensor.h"
#include "gtest/gtest.h"

namespace tessera::cpu {
namespace {

std::vector<float> Random(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}

std::vector<uint16_t> ToBf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = F32ToBf16(v[i]);
  return out;
}

std::vector<float> Widened(const std::vector<uint16_t>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = Bf16ToF32(v[i]);
  return out;
}

class AttnRowsVariantTest : public ::testing::TestWithParam<SmallGemmIsa> {};

TEST_P(AttnRowsVariantTest, MatchesTheReference) {
  const SmallGemmIsa isa = GetParam();
  if (!SmallGemmSupports(isa)) {
    GTEST_SKIP() << "this CPU lacks the features of the " << IsaName(isa) << " variant (best here: "
                 << IsaName(SmallGemmBestIsa()) << ")";
  }
  for (int64_t hd : {1, 7, 8, 16, 24, 64, 72, 128, 136}) {
    for (int64_t n : {1, 5, 16}) {
      const int64_t stride = 3 * hd + 5;  // rows of other heads in between, unaligned
      const std::vector<float> q = Random(hd, 1), w = Random(n, 2), acc0 = Random(hd, 3);
      const std::vector<float> kv32 = Random(n * stride, 4);
      const std::vector<uint16_t> kv16 = ToBf16(kv32);
      const std::vector<float> kv16w = Widened(kv16);
      for (bool bf16 : {false, true}) {
        const std::vector<float>& ref = bf16 ? kv16w : kv32;
        const std::string what = std::string(bf16 ? "bf16" : "f32") + " hd=" + std::to_string(hd) +
                                 " n=" + std::to_string(n);
        std::vector<float> s(n), acc = acc0;
        if (bf16) {
          AttnDotRows(isa, q.data(), kv16.data(), stride, n, hd, 0.5f, s.data());
          AttnAxpyRows(isa, w.data(), kv16.data(), stride, n, hd, acc.data());
        } else {
          AttnDotRows(isa, q.data(), kv32.data(), stride, n, hd, 0.5f, s.data());
          AttnAxpyRows(isa, w.data(), kv32.data(), stride, n, hd, acc.data());
        }
        for (int64_t r = 0; r < n; ++r) {
          double want = 0;
          for (int64_t d = 0; d < hd; ++d) want += static_cast<double>(q[d]) * ref[r * stride + d];
          ASSERT_NEAR(s[r], 0.5 * want, 1e-5 * (1 + std::fabs(want))) << what << " row " << r;
        }
        for (int64_t d = 0; d < hd; ++d) {
          double want = acc0[d];
          for (int64_t r = 0; r < n; ++r) want += static_cast<double>(w[r]) * ref[r * stride + d];
          ASSERT_NEAR(acc[d], want, 1e-5 * (1 + std::fabs(want))) << what << " element " << d;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllVariants, AttnRowsVariantTest,
                         ::testing::Values(SmallGemmIsa::kPortable, SmallGemmIsa::kAvx2, SmallGemmIsa::kAvx512),
                         [](const ::testing::TestParamInfo<SmallGemmIsa>& i) { return std::string(IsaName(i.param)); });

}  // namespace
}  // namespace tessera::cpu
