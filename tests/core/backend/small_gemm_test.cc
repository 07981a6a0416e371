// The few-row matmul path (direct kernels of core/backend/cpu/cpu_small_gemm.h on the CPU backend):
// Matmul with op(a) of 1..8 rows (trans_b both ways, alpha/beta, uninitialized c with beta == 0) and
// the grouped expert matmuls with many groups of 1..8 rows next to large groups, at odd dimensions
// (kernel tails) and at sizes that split columns across threads, against double reference loops.
// Runs on every available backend (the contract is the backend's, whichever path serves it).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/backend/cpu/cpu_small_gemm.h"
#include "tests/core/backend/backend_test_util.h"

namespace tessera::testing {
namespace {

// Groups of every size 1..8 (many of them, as in a multi-tenant batch), an empty group, one large
// group (sgemm path), and gap rows that must stay untouched.
struct GroupedCase {
  int64_t in, out;
  std::vector<int64_t> sizes;  // rows per group; a gap row follows every 5th group
};

struct GroupedProblem {
  int64_t n = 0;
  std::vector<std::vector<double>> w;
  std::vector<GemmGroup> groups;
};

class SmallGemmTest : public BackendTest {
 protected:
  // Uploads p's weights ([out, in] each) and points p's groups at them; keep the result alive.
  std::vector<Tensor> UploadWeights(GroupedProblem& p, const GroupedCase& gc) {
    std::vector<Tensor> wt;
    wt.reserve(p.w.size());
    for (size_t i = 0; i < p.w.size(); ++i) {
      wt.push_back(Up(p.w[i], {gc.out, gc.in}));
      p.groups[i].weight = &wt.back();
    }
    return wt;
  }
};
TESSERA_INSTANTIATE_BACKEND_TEST(SmallGemmTest);

double Tol(int64_t k) { return 1e-6 * static_cast<double>(k) + 1e-6; }

TEST_P(SmallGemmTest, MatmulFewRowsAllTransBAlphaBeta) {
  struct Shape { int64_t n, k; };
  // Odd n and k exercise every tile tail. The CPU backend sends products of up to 8 rows (4 without
  // trans_b) with m*n*k > 262144 to its direct kernels: the last two shapes, split over threads.
  for (Shape s : {Shape{1, 1}, Shape{7, 5}, Shape{29, 37}, Shape{1001, 301}, Shape{263, 1037}}) {
    for (int64_t m = 1; m <= 9; ++m) {
      for (int tb = 0; tb < 2; ++tb) {
        for (auto [alpha, beta] : {std::pair<float, float>{1.0f, 0.0f}, {0.5f, 1.0f}, {-2.0f, 0.25f}}) {
          const std::string what = "m=" + std::to_string(m) + " n=" + std::to_string(s.n) +
                                   " k=" + std::to_string(s.k) + " tb=" + std::to_string(tb) +
                                   " beta=" + std::to_string(beta);
          std::vector<double> a = RandomValues(m * s.k, m), b = RandomValues(s.k * s.n, s.n + tb);
          std::vector<double> c0 = RandomValues(m * s.n, 7);
          Tensor at = Up(a, {m, s.k});
          Tensor bt = Up(b, tb ? std::vector<int64_t>{s.n, s.k} : std::vector<int64_t>{s.k, s.n});
          Tensor c = beta == 0.0f ? Garbage({m, s.n}) : Up(c0, {m, s.n});
          ASSERT_TRUE(be().Matmul(at, false, bt, tb, c, alpha, beta).ok()) << what;
          std::vector<double> want(m * s.n);
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < s.n; ++j) {
              double acc = 0;
              for (int64_t p = 0; p < s.k; ++p) acc += a[i * s.k + p] * (tb ? b[j * s.k + p] : b[p * s.n + j]);
              want[i * s.n + j] = alpha * acc + (beta == 0.0f ? 0.0 : beta * c0[i * s.n + j]);
            }
          }
          ExpectClose(Down(c), want, Tol(s.k) * (std::fabs(alpha) + 1), 1e-5, what);
        }
      }
    }
  }
}

GroupedProblem MakeProblem(const GroupedCase& gc) {
  GroupedProblem p;
  for (size_t i = 0; i < gc.sizes.size(); ++i) {
    p.groups.push_back({p.n, gc.sizes[i], nullptr, nullptr});
    p.n += gc.sizes[i];
    if (i % 5 == 4) ++p.n;  // a gap row
    p.w.push_back(RandomValues(gc.out * gc.in, 100 + i));
  }
  return p;
}

std::vector<GroupedCase> GroupedCases() {
  std::vector<int64_t> many;
  for (int i = 0; i < 40; ++i) many.push_back(1 + (i * 7) % 8);
  std::vector<int64_t> mixed = {3, 0, 20, 1, 2, 8, 9, 5};
  // 613 x 517 > 262144 per row: the CPU backend's direct kernels (next to sgemm for the 9/20-row ones).
  return {{37, 29, many}, {192, 96, many}, {613, 517, {1, 2, 3, 1, 8, 4, 5, 6, 7, 2, 3, 1}},
          {613, 517, mixed}, {5, 3, {1, 2, 3, 4}}};
}

TEST_P(SmallGemmTest, GroupedMatmulSmallGroups) {
  for (const GroupedCase& gc : GroupedCases()) {
    GroupedProblem p = MakeProblem(gc);
    const std::vector<Tensor> wt = UploadWeights(p, gc);
    std::vector<double> x = RandomValues(p.n * gc.in, 5), y0 = RandomValues(p.n * gc.out, 6);
    Tensor xt = Up(x, {p.n, gc.in}), yt = Up(y0, {p.n, gc.out});
    ASSERT_TRUE(be().GroupedMatmul(xt, p.groups, yt).ok());
    std::vector<double> want = RoundToF32(y0);
    for (size_t gi = 0; gi < p.groups.size(); ++gi) {
      const GemmGroup& g = p.groups[gi];
      for (int64_t r = g.row_begin; r < g.row_begin + g.rows; ++r) {
        for (int64_t o = 0; o < gc.out; ++o) {
          double acc = 0;
          for (int64_t i = 0; i < gc.in; ++i) acc += x[r * gc.in + i] * p.w[gi][o * gc.in + i];
          want[r * gc.out + o] = acc;
        }
      }
    }
    ExpectClose(Down(yt), want, Tol(gc.in), 1e-5, "GroupedMatmul in=" + std::to_string(gc.in));
  }
}

TEST_P(SmallGemmTest, GroupedMatmulInputGradSmallGroups) {
  for (const GroupedCase& gc : GroupedCases()) {
    GroupedProblem p = MakeProblem(gc);
    const std::vector<Tensor> wt = UploadWeights(p, gc);
    std::vector<double> dy = RandomValues(p.n * gc.out, 8), dx0 = RandomValues(p.n * gc.in, 9);
    Tensor dyt = Up(dy, {p.n, gc.out}), dxt = Up(dx0, {p.n, gc.in});
    ASSERT_TRUE(be().GroupedMatmulInputGrad(dyt, p.groups, dxt).ok());
    std::vector<double> want = RoundToF32(dx0);
    for (size_t gi = 0; gi < p.groups.size(); ++gi) {
      const GemmGroup& g = p.groups[gi];
      for (int64_t r = g.row_begin; r < g.row_begin + g.rows; ++r) {
        for (int64_t i = 0; i < gc.in; ++i) {
          double acc = 0;
          for (int64_t o = 0; o < gc.out; ++o) acc += dy[r * gc.out + o] * p.w[gi][o * gc.in + i];
          want[r * gc.in + i] = acc;
        }
      }
    }
    ExpectClose(Down(dxt), want, Tol(gc.out), 1e-5, "GroupedMatmulInputGrad in=" + std::to_string(gc.in));
  }
}

TEST_P(SmallGemmTest, GroupedMatmulWeightGradSmallGroups) {
  for (const GroupedCase& gc : GroupedCases()) {
    GroupedProblem p = MakeProblem(gc);
    const std::vector<Tensor> wt = UploadWeights(p, gc);
    std::vector<Tensor> gt;
    gt.reserve(p.w.size());
    std::vector<std::vector<double>> g0;
    for (size_t i = 0; i < p.w.size(); ++i) {
      g0.push_back(RandomValues(gc.out * gc.in, 300 + i));
      gt.push_back(Up(g0.back(), {gc.out, gc.in}));
      p.groups[i].weight_grad = &gt.back();
    }
    std::vector<double> x = RandomValues(p.n * gc.in, 10), dy = RandomValues(p.n * gc.out, 11);
    Tensor xt = Up(x, {p.n, gc.in}), dyt = Up(dy, {p.n, gc.out});
    ASSERT_TRUE(be().GroupedMatmulWeightGrad(xt, dyt, p.groups).ok());
    for (size_t gi = 0; gi < p.groups.size(); ++gi) {
      const GemmGroup& g = p.groups[gi];
      std::vector<double> want = RoundToF32(g0[gi]);
      for (int64_t o = 0; o < gc.out; ++o) {
        for (int64_t i = 0; i < gc.in; ++i) {
          for (int64_t r = g.row_begin; r < g.row_begin + g.rows; ++r) {
            want[o * gc.in + i] += dy[r * gc.out + o] * x[r * gc.in + i];
          }
        }
      }
      ExpectClose(Down(gt[gi]), want, Tol(g.rows) + 1e-6, 1e-5,
                  "GroupedMatmulWeightGrad group " + std::to_string(gi));
    }
  }
}

// Every kernel variant this CPU can run (portable, AVX2, AVX-512), called directly: the backend only
// reaches the best one, and only above its size threshold. Strided operands (ld > width), every row
// count 1..13 (tile blocks of 1-4, the paired 5-8 rows, and their combinations), odd n and k (vector
// and tile tails), NT with and without the streamed-b prefetches, and beta == 0 over a NaN-filled c (it
// must be ignored, as in BLAS).
TEST(SmallGemmKernelTest, EveryIsaMatchesReference) {
  using cpu::SmallGemmIsa;
  struct Shape { int64_t n, k; };
  for (SmallGemmIsa isa : {SmallGemmIsa::kPortable, SmallGemmIsa::kAvx2, SmallGemmIsa::kAvx512}) {
    if (!cpu::SmallGemmSupports(isa)) continue;
    for (Shape s : {Shape{1, 1}, Shape{9, 17}, Shape{31, 45}, Shape{100, 192}, Shape{67, 133}}) {
      for (int64_t m = 1; m <= 13; ++m) {
        for (int mode = 0; mode < 3; ++mode) {  // NN; NT with b cached; NT with b streamed (prefetching)
          const int nt = mode > 0;
          const cpu::SmallGemmB b_from = mode == 2 ? cpu::SmallGemmB::kStreamed : cpu::SmallGemmB::kCached;
          for (auto [alpha, beta] : {std::pair<float, float>{1.0f, 0.0f}, {-0.5f, 0.75f}}) {
            const int64_t lda = s.k + 3, ldc = s.n + 5;
            const int64_t ldb = nt ? s.k + 2 : s.n + 2;  // NT: b is [n, k]; NN: b is [k, n]
            std::vector<float> a = ToF32(RandomValues(m * lda, 1 + m));
            std::vector<float> b = ToF32(RandomValues((nt ? s.n : s.k) * ldb, 2 + s.n));
            std::vector<float> c0 = ToF32(RandomValues(m * ldc, 3));
            std::vector<float> c = c0;
            if (beta == 0.0f) std::fill(c.begin(), c.end(), std::nanf(""));
            if (nt) {
              cpu::SmallGemmNTWithIsa(isa, m, s.n, s.k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc,
                                      b_from);
            } else {
              cpu::SmallGemmNNWithIsa(isa, m, s.n, s.k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
            }
            std::vector<float> got;
            std::vector<double> want;
            for (int64_t i = 0; i < m; ++i) {
              for (int64_t j = 0; j < s.n; ++j) {
                double acc = 0;
                for (int64_t p = 0; p < s.k; ++p) {
                  acc += static_cast<double>(a[i * lda + p]) * (nt ? b[j * ldb + p] : b[p * ldb + j]);
                }
                want.push_back(alpha * acc + (beta == 0.0f ? 0.0 : beta * static_cast<double>(c0[i * ldc + j])));
                got.push_back(c[i * ldc + j]);
              }
            }
            ExpectClose(got, want, Tol(s.k) * 2, 1e-5,
                        "isa=" + std::to_string(static_cast<int>(isa)) + " mode=" + std::to_string(mode) +
                            " m=" + std::to_string(m) + " n=" + std::to_string(s.n) + " k=" + std::to_string(s.k));
            // Padding columns of c (between n and ldc) are not written.
            for (int64_t i = 0; i < m; ++i) {
              for (int64_t j = s.n; j < ldc; ++j) {
                const float before = beta == 0.0f ? std::nanf("") : c0[i * ldc + j];
                ASSERT_TRUE(std::isnan(before) ? std::isnan(c[i * ldc + j]) : c[i * ldc + j] == before)
                    << "isa=" << static_cast<int>(isa) << " wrote padding at row " << i << " col " << j;
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace tessera::testing
