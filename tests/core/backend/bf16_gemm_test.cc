// bf16-weight small-M GEMM (core/backend/cpu/cpu_bf16_gemm.h): every kernel variant this CPU can run
// against a double-precision reference on the same bf16 inputs (variants the CPU lacks are skipped with
// a message), and the CPU backend's bf16 decode fast path (Matmul / GroupedMatmul with bf16 operands and
// few rows) against the same products through the f32 kernels on the widened values; through the
// backend (Matmul via NarrowStorageBackend) the same path serves bf16 models (model tests, bench_forward).
#include "core/backend/cpu/cpu_bf16_gemm.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "core/backend/cpu/cpu_backend_internal.h"
#include "gtest/gtest.h"

namespace tessera::cpu {
namespace {

std::vector<uint16_t> RandomBf16(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<uint16_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = F32ToBf16(u(rng));
  return v;
}

class Bf16GemmVariantTest : public ::testing::TestWithParam<Bf16GemmIsa> {};

TEST_P(Bf16GemmVariantTest, MatchesTheReference) {
  const Bf16GemmIsa isa = GetParam();
  if (!Bf16GemmSupports(isa)) {
    GTEST_SKIP() << "this CPU lacks the features of the " << IsaName(isa) << " variant (best here: "
                 << IsaName(Bf16GemmBestIsa()) << ")";
  }
  struct Shape { int64_t m, n, k; };
  // k around the 16/32-element steps and their tails; n around the 8-output tiles; m 1..8 (row blocks
  // of 3 and 2+2).
  std::vector<Shape> shapes;
  for (int64_t m : {1, 2, 3, 4, 5, 7, 8}) {
    for (int64_t n : {1, 7, 8, 9, 17}) {
      for (int64_t k : {1, 5, 15, 16, 17, 31, 32, 33, 64, 100}) shapes.push_back({m, n, k});
    }
  }
  shapes.push_back({1, 64, 1024});
  shapes.push_back({3, 24, 1023});
  for (const Shape& s : shapes) {
    for (auto [alpha, beta] : {std::pair<float, float>{1.0f, 0.0f}, {0.5f, 1.0f}, {-2.0f, 0.25f}}) {
      const int64_t lda = s.k + 3, ldb = s.k + 1, ldc = s.n + 2;  // strides wider than the rows
      const std::vector<uint16_t> a = RandomBf16(s.m * lda, 1 + s.k), b = RandomBf16(s.n * ldb, 2 + s.n);
      std::vector<float> a32(a.size());
      for (size_t i = 0; i < a.size(); ++i) a32[i] = Bf16ToF32(a[i]);
      std::vector<float> c(static_cast<size_t>(s.m * ldc));
      for (size_t i = 0; i < c.size(); ++i) c[i] = beta == 0.0f ? std::numeric_limits<float>::quiet_NaN() : 0.1f * (i % 7);
      const std::vector<float> c0 = c;
      Bf16GemmNT(isa, s.m, s.n, s.k, alpha, a.data(), a32.data(), lda, b.data(), ldb, beta, c.data(), ldc);
      for (int64_t r = 0; r < s.m; ++r) {
        for (int64_t j = 0; j < ldc; ++j) {
          const size_t ci = static_cast<size_t>(r * ldc + j);
          if (j >= s.n) {  // outside the product: untouched
            if (beta == 0.0f) EXPECT_TRUE(std::isnan(c[ci]));
            else EXPECT_EQ(c[ci], c0[ci]);
            continue;
          }
          double ref = 0, mag = 0;
          for (int64_t p = 0; p < s.k; ++p) {
            const double x = Bf16ToF32(a[r * lda + p]), y = Bf16ToF32(b[j * ldb + p]);
            ref += x * y;
            mag += std::fabs(x * y);
          }
          ref = alpha * ref + (beta == 0.0f ? 0.0 : beta * static_cast<double>(c0[ci]));
          ASSERT_NEAR(c[ci], ref, 2e-6 * (std::fabs(alpha) * mag + 1.0))
              << IsaName(isa) << " m=" << s.m << " n=" << s.n << " k=" << s.k << " alpha=" << alpha
              << " beta=" << beta << " at (" << r << ", " << j << ")";
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllVariants, Bf16GemmVariantTest,
                         ::testing::Values(Bf16GemmIsa::kPortable, Bf16GemmIsa::kAvx2, Bf16GemmIsa::kAvx512,
                                           Bf16GemmIsa::kAvx512Bf16),
                         [](const ::testing::TestParamInfo<Bf16GemmIsa>& i) { return std::string(IsaName(i.param)); });

// ---- The backend's bf16 decode path against the f32 kernels on the widened values --------------------

Tensor Upload(Backend& be, const std::vector<uint16_t>& v, std::vector<int64_t> shape, DType dtype) {
  Tensor t = be.Alloc(shape, dtype).value();
  if (dtype == DType::kBF16) {
    EXPECT_TRUE(be.CopyFromHost(v.data(), v.size() * 2, t).ok());
  } else {
    std::vector<float> f(v.size());
    for (size_t i = 0; i < v.size(); ++i) f[i] = Bf16ToF32(v[i]);
    EXPECT_TRUE(be.CopyFromHost(f.data(), f.size() * 4, t).ok());
  }
  return t;
}

std::vector<float> Download(Backend& be, const Tensor& t) { return be.ToHostF32(t).value(); }

void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tol * (1.0 + std::fabs(want[i]))) << what << " at " << i;
  }
}

TEST(Bf16DecodePathTest, MatmulMatchesTheF32Kernels) {
  auto be = MakeCpuBackend();
  // A decode-sized projection and an LM-head-sized one (split over threads), 1..8 rows (the bf16 kernels'
  // below AVX512_BF16), and 9, 40 and 130 rows (prefill: widened panels through sgemm there, 16 panels of
  // 256 columns at k = 256).
  for (auto [n, k] : {std::pair<int64_t, int64_t>{40, 33}, {4000, 256}}) {
    for (int64_t m : {1, 3, 8, 9, 40, 130}) {
      const auto a = RandomBf16(m * k, 11 + m), b = RandomBf16(n * k, 12), c0 = RandomBf16(m * n, 13);
      for (DType cdt : {DType::kF32, DType::kBF16}) {
        for (auto [alpha, beta] : {std::pair<float, float>{1.0f, 0.0f}, {0.5f, 1.0f}}) {
          const std::string what = "m=" + std::to_string(m) + " n=" + std::to_string(n) + " c=" + DTypeName(cdt) +
                                   " beta=" + std::to_string(beta);
          Tensor a16 = Upload(*be, a, {m, k}, DType::kBF16), b16 = Upload(*be, b, {n, k}, DType::kBF16);
          Tensor c16 = Upload(*be, c0, {m, n}, cdt);
          // Called directly: a silent fallback to the staging path would fail here.
          ASSERT_TRUE(Bf16DirectMatmul(a16, false, b16, true, c16, alpha, beta)) << what;
          Tensor a32 = Upload(*be, a, {m, k}, DType::kF32), b32 = Upload(*be, b, {n, k}, DType::kF32);
          Tensor c32 = Upload(*be, c0, {m, n}, DType::kF32);
          ASSERT_TRUE(be->Matmul(a32, false, b32, true, c32, alpha, beta).ok()) << what;
          std::vector<float> want = Download(*be, c32);
          if (cdt == DType::kBF16) {
            for (float& x : want) x = Bf16ToF32(F32ToBf16(x));  // one rounding at the store
          }
          // Sums in another order: f32 rounding (~k * 6e-8) and, for a bf16 c, one bf16 ulp.
          ExpectClose(Download(*be, c16), want, cdt == DType::kBF16 ? 8e-3 : 1e-5, what);
        }
      }
    }
  }
}

TEST(Bf16DecodePathTest, GroupedMatmulMatchesTheF32KernelsAndLeavesGapsAlone) {
  auto be = MakeCpuBackend();
  // Groups of 1..8 rows with gap rows between them, an empty group, and one of 23 rows (the bf16 kernel
  // with AVX512_BF16, else widened panels: one at in = 96, four at in = 1024).
  const std::vector<std::pair<int64_t, int64_t>> spans = {{0, 1}, {2, 3}, {5, 0}, {6, 8}, {15, 2}, {18, 23}};
  const int64_t n_rows = 42;
  for (auto [in, out] : {std::pair<int64_t, int64_t>{96, 200}, {1024, 230}}) {
    const auto x = RandomBf16(n_rows * in, 21), y0 = RandomBf16(n_rows * out, 22);
    std::vector<std::vector<uint16_t>> w;
    for (size_t g = 0; g < spans.size(); ++g) w.push_back(RandomBf16(out * in, 30 + g));
    for (DType ydt : {DType::kF32, DType::kBF16}) {
      const std::string what = "in=" + std::to_string(in) + " y=" + DTypeName(ydt);
      std::vector<Tensor> w16, w32;
      for (const auto& wi : w) {
        w16.push_back(Upload(*be, wi, {out, in}, DType::kBF16));
        w32.push_back(Upload(*be, wi, {out, in}, DType::kF32));
      }
      std::vector<GemmGroup> g16, g32;
      for (size_t g = 0; g < spans.size(); ++g) {
        g16.push_back({spans[g].first, spans[g].second, &w16[g], nullptr});
        g32.push_back({spans[g].first, spans[g].second, &w32[g], nullptr});
      }
      Tensor x16 = Upload(*be, x, {n_rows, in}, DType::kBF16), y16 = Upload(*be, y0, {n_rows, out}, ydt);
      Tensor x32 = Upload(*be, x, {n_rows, in}, DType::kF32), y32 = Upload(*be, y0, {n_rows, out}, DType::kF32);
      ASSERT_TRUE(Bf16DirectGroupedMatmul(x16, g16, y16)) << what;
      ASSERT_TRUE(be->GroupedMatmul(x32, g32, y32).ok()) << what;
      std::vector<float> want = Download(*be, y32);
      if (ydt == DType::kBF16) {
        for (float& v : want) v = Bf16ToF32(F32ToBf16(v));
      }
      const std::vector<float> got = Download(*be, y16);
      ExpectClose(got, want, ydt == DType::kBF16 ? 8e-3 : 1e-5, what);
      for (int64_t gap : {1, 5, 14, 17, 41}) {  // rows outside every group keep their values exactly
        for (int64_t j = 0; j < out; ++j) EXPECT_EQ(got[gap * out + j], Bf16ToF32(y0[gap * out + j])) << what;
      }
    }
  }
}

}  // namespace
}  // namespace tessera::cpu
