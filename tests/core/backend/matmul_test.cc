// Dense and grouped matmuls on every available backend against double reference loops, and the
// grouped matmul's input/weight gradients against central differences of the double reference.
// Tolerance for a K-term float dot product: atol 1e-6 * K + 1e-6, rtol 1e-5 (inputs in [-1, 1]).
#include "tests/core/backend/backend_test_util.h"

namespace tessera::testing {
namespace {

using MatmulTest = BackendTest;
TESSERA_INSTANTIATE_BACKEND_TEST(MatmulTest);

double MatTol(int64_t k) { return 1e-6 * static_cast<double>(k) + 1e-6; }

TEST_P(MatmulTest, AllTransposesAlphaBeta) {
  struct Shape { int64_t m, n, k; };
  // The last two are above the BLAS's single-thread size, so the CPU backend's Sgemm splits them over the
  // pool: by rows (200 rows), by 64-column panels (40 rows, 300 columns).
  for (Shape s : {Shape{1, 1, 1}, Shape{3, 7, 5}, Shape{33, 65, 17}, Shape{64, 48, 129}, Shape{1, 100, 300},
                  Shape{200, 150, 40}, Shape{40, 300, 100}}) {
    for (int ta = 0; ta < 2; ++ta) {
      for (int tb = 0; tb < 2; ++tb) {
        for (auto [alpha, beta] : {std::pair<float, float>{1.0f, 0.0f}, {0.5f, 1.0f}, {-2.0f, 0.25f}}) {
          std::vector<double> a = RandomValues(s.m * s.k, s.m + 10 * ta), b = RandomValues(s.k * s.n, s.n + tb);
          std::vector<double> c0 = RandomValues(s.m * s.n, 99);
          Tensor ta_t = Up(a, ta ? std::vector<int64_t>{s.k, s.m} : std::vector<int64_t>{s.m, s.k});
          Tensor tb_t = Up(b, tb ? std::vector<int64_t>{s.n, s.k} : std::vector<int64_t>{s.k, s.n});
          Tensor c = beta == 0.0f ? Garbage({s.m, s.n}) : Up(c0, {s.m, s.n});
          ASSERT_TRUE(be().Matmul(ta_t, ta, tb_t, tb, c, alpha, beta).ok());
          std::vector<double> want(s.m * s.n);
          for (int64_t i = 0; i < s.m; ++i) {
            for (int64_t j = 0; j < s.n; ++j) {
              double acc = 0;
              for (int64_t k = 0; k < s.k; ++k) {
                const double av = ta ? a[k * s.m + i] : a[i * s.k + k];
                const double bv = tb ? b[j * s.k + k] : b[k * s.n + j];
                acc += av * bv;
              }
              want[i * s.n + j] = alpha * acc + (beta == 0.0f ? 0.0 : beta * c0[i * s.n + j]);
            }
          }
          ExpectClose(Down(c), want, MatTol(s.k) * (std::fabs(alpha) + 1), 1e-5,
                      "Matmul m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) + " k=" +
                          std::to_string(s.k) + " ta=" + std::to_string(ta) + " tb=" + std::to_string(tb));
        }
      }
    }
  }
}

TEST_P(MatmulTest, RejectsMismatchedShapes) {
  Tensor a = Garbage({3, 4}), b = Garbage({5, 6}), c = Garbage({3, 6});
  absl::Status s = be().Matmul(a, false, b, false, c);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("b"), std::string::npos) << s;
  Tensor b2 = Garbage({4, 6}), c2 = Garbage({3, 5});
  s = be().Matmul(a, false, b2, false, c2);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("c has shape [3,5], expected [3,6]"), std::string::npos) << s;
  Tensor r3 = Garbage({2, 3, 4});
  EXPECT_EQ(be().Matmul(r3, false, b2, false, c).code(), absl::StatusCode::kInvalidArgument);
}

// A grouped-matmul problem: weights per group, row ranges with gaps and empty groups.
struct GroupedCase {
  int64_t n, in, out;
  std::vector<std::pair<int64_t, int64_t>> ranges;  // (row_begin, rows)
};

std::vector<GroupedCase> GroupedCases() {
  std::vector<GroupedCase> cases;
  cases.push_back({1, 1, 1, {{0, 1}}});
  cases.push_back({10, 7, 3, {{0, 3}, {3, 0}, {5, 4}}});  // rows 3,4 and 9 in no group
  // Many small groups (run concurrently) plus one holding most rows (runs alone, split by Sgemm).
  GroupedCase many{200, 33, 65, {}};
  int64_t r = 0;
  for (int g = 0; g < 24 && r < 60; ++g) {
    many.ranges.push_back({r, g % 5});
    r += g % 5 + (g % 3 == 0);
  }
  many.ranges.push_back({70, 130});
  cases.push_back(many);
  GroupedCase big{300, 128, 96, {{0, 150}, {150, 1}, {160, 140}}};
  cases.push_back(big);
  // Groups each above the BLAS's single-thread size, none dominant: concurrent, each Sgemm on its thread.
  cases.push_back({400, 64, 80, {{0, 100}, {100, 90}, {190, 110}, {300, 100}}});
  return cases;
}

TEST_P(MatmulTest, GroupedForwardInputGradWeightGrad) {
  for (const GroupedCase& gc : GroupedCases()) {
    const size_t g = gc.ranges.size();
    std::vector<std::vector<double>> w(g);
    std::vector<Tensor> wt(g), dwt(g);
    std::vector<std::vector<double>> dw0(g);
    std::vector<GemmGroup> groups(g);
    for (size_t i = 0; i < g; ++i) {
      w[i] = RandomValues(gc.out * gc.in, 100 + i);
      dw0[i] = RandomValues(gc.out * gc.in, 200 + i);
      wt[i] = Up(w[i], {gc.out, gc.in});
      dwt[i] = Up(dw0[i], {gc.out, gc.in});
    }
    for (size_t i = 0; i < g; ++i) {
      groups[i] = GemmGroup{gc.ranges[i].first, gc.ranges[i].second, &wt[i], i % 4 == 3 ? nullptr : &dwt[i]};
    }
    std::vector<double> x = RandomValues(gc.n * gc.in, 1), dy = RandomValues(gc.n * gc.out, 2);
    std::vector<double> y0 = RandomValues(gc.n * gc.out, 3), dx0 = RandomValues(gc.n * gc.in, 4);
    Tensor y = Up(y0, {gc.n, gc.out}), dx = Up(dx0, {gc.n, gc.in});
    Tensor tx = Up(x, {gc.n, gc.in}), tdy = Up(dy, {gc.n, gc.out});
    ASSERT_TRUE(be().GroupedMatmul(tx, groups, y).ok());
    ASSERT_TRUE(be().GroupedMatmulInputGrad(tdy, groups, dx).ok());
    ASSERT_TRUE(be().GroupedMatmulWeightGrad(tx, tdy, groups).ok());
    std::vector<double> want_y = y0, want_dx = dx0;
    for (size_t i = 0; i < g; ++i) {
      std::vector<double> want_dw = dw0[i];
      for (int64_t r = gc.ranges[i].first; r < gc.ranges[i].first + gc.ranges[i].second; ++r) {
        for (int64_t o = 0; o < gc.out; ++o) {
          double acc = 0;
          for (int64_t k = 0; k < gc.in; ++k) acc += x[r * gc.in + k] * w[i][o * gc.in + k];
          want_y[r * gc.out + o] = acc;
        }
        for (int64_t k = 0; k < gc.in; ++k) {
          double acc = 0;
          for (int64_t o = 0; o < gc.out; ++o) acc += dy[r * gc.out + o] * w[i][o * gc.in + k];
          want_dx[r * gc.in + k] = acc;
        }
        for (int64_t o = 0; o < gc.out; ++o) {
          for (int64_t k = 0; k < gc.in; ++k) want_dw[o * gc.in + k] += dy[r * gc.out + o] * x[r * gc.in + k];
        }
      }
      ExpectClose(Down(dwt[i]), groups[i].weight_grad ? want_dw : dw0[i], MatTol(gc.n), 1e-5,
                  "GroupedMatmulWeightGrad group " + std::to_string(i));
    }
    ExpectClose(Down(y), want_y, MatTol(gc.in), 1e-5, "GroupedMatmul");
    ExpectClose(Down(dx), want_dx, MatTol(gc.out), 1e-5, "GroupedMatmulInputGrad");
  }
}

// The backward ops are the gradients of the forward: central differences of L = sum(R .* y(x, W)).
TEST_P(MatmulTest, GroupedGradsMatchFiniteDifferences) {
  const int64_t n = 9, in = 5, out = 4;
  const std::vector<std::pair<int64_t, int64_t>> ranges = {{0, 4}, {4, 0}, {5, 3}};  // row 8 in none
  std::vector<double> x = RandomValues(n * in, 1), r = RandomValues(n * out, 2);
  std::vector<std::vector<double>> w = {RandomValues(out * in, 3), RandomValues(out * in, 4),
                                        RandomValues(out * in, 5)};
  auto forward = [&](const std::vector<double>& xx, const std::vector<std::vector<double>>& ww) {
    double l = 0;
    for (size_t g = 0; g < ranges.size(); ++g) {
      for (int64_t row = ranges[g].first; row < ranges[g].first + ranges[g].second; ++row) {
        for (int64_t o = 0; o < out; ++o) {
          double acc = 0;
          for (int64_t k = 0; k < in; ++k) acc += xx[row * in + k] * ww[g][o * in + k];
          l += r[row * out + o] * acc;
        }
      }
    }
    return l;
  };
  std::vector<Tensor> wt, dwt;
  for (size_t g = 0; g < 3; ++g) {
    wt.push_back(Up(w[g], {out, in}));
    dwt.push_back(Up(std::vector<double>(out * in, 0.0), {out, in}));
  }
  std::vector<GemmGroup> groups;
  for (size_t g = 0; g < 3; ++g) groups.push_back({ranges[g].first, ranges[g].second, &wt[g], &dwt[g]});
  Tensor dx = Up(std::vector<double>(n * in, 0.0), {n, in});
  ASSERT_TRUE(be().GroupedMatmulInputGrad(Up(r, {n, out}), groups, dx).ok());
  ASSERT_TRUE(be().GroupedMatmulWeightGrad(Up(x, {n, in}), Up(r, {n, out}), groups).ok());
  ExpectClose(Down(dx), NumericalGrad([&](const std::vector<double>& xx) { return forward(xx, w); }, x),
              1e-5, 1e-4, "dx");
  for (size_t g = 0; g < 3; ++g) {
    auto f = [&](const std::vector<double>& wg) {
      auto ww = w;
      ww[g] = wg;
      return forward(x, ww);
    };
    ExpectClose(Down(dwt[g]), NumericalGrad(f, w[g]), 1e-5, 1e-4, "dW group " + std::to_string(g));
  }
}

TEST_P(MatmulTest, GroupedRejectsBadGroups) {
  Tensor x = Garbage({6, 4}), y = Garbage({6, 3}), w = Garbage({3, 4}), wrong = Garbage({4, 3});
  std::vector<GemmGroup> out_of_range = {{4, 3, &w, nullptr}};
  EXPECT_EQ(be().GroupedMatmul(x, out_of_range, y).code(), absl::StatusCode::kInvalidArgument);
  std::vector<GemmGroup> overlapping = {{0, 3, &w, nullptr}, {2, 2, &w, nullptr}};
  EXPECT_EQ(be().GroupedMatmul(x, overlapping, y).code(), absl::StatusCode::kInvalidArgument);
  std::vector<GemmGroup> bad_weight = {{0, 3, &wrong, nullptr}};
  absl::Status s = be().GroupedMatmul(x, bad_weight, y);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("groups[0].weight has shape [4,3], expected [3,4]"), std::string::npos) << s;
  std::vector<GemmGroup> null_weight = {{0, 3, nullptr, nullptr}};
  EXPECT_EQ(be().GroupedMatmulInputGrad(y, null_weight, x).code(), absl::StatusCode::kInvalidArgument);
  std::vector<GemmGroup> bad_grad = {{0, 3, &w, &wrong}};
  EXPECT_EQ(be().GroupedMatmulWeightGrad(x, y, bad_grad).code(), absl::StatusCode::kInvalidArgument);
  Tensor y_bad_rows = Garbage({5, 3});
  std::vector<GemmGroup> ok = {{0, 3, &w, nullptr}};
  EXPECT_EQ(be().GroupedMatmul(x, ok, y_bad_rows).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::testing

namespace tessera::testing {
namespace {

// Two groups accumulating into one weight-grad tensor (the same expert used by two row ranges).
TEST_P(MatmulTest, WeightGradGroupsSharingOneGradient) {
  const int64_t n = 40, in = 9, out = 6;
  std::vector<double> x = RandomValues(n * in, 1), dy = RandomValues(n * out, 2), w = RandomValues(out * in, 3);
  Tensor tw = Up(w, {out, in}), dw = Up(std::vector<double>(out * in, 0.0), {out, in});
  std::vector<GemmGroup> groups = {{0, 2, &tw, &dw}, {5, 3, &tw, &dw}, {10, 30, &tw, &dw}};
  ASSERT_TRUE(be().GroupedMatmulWeightGrad(Up(x, {n, in}), Up(dy, {n, out}), groups).ok());
  std::vector<double> want(out * in, 0.0);
  for (const GemmGroup& g : groups) {
    for (int64_t r = g.row_begin; r < g.row_begin + g.rows; ++r) {
      for (int64_t o = 0; o < out; ++o) {
        for (int64_t k = 0; k < in; ++k) want[o * in + k] += dy[r * out + o] * x[r * in + k];
      }
    }
  }
  ExpectClose(Down(dw), want, MatTol(n), 1e-5, "shared weight grad");
}

}  // namespace
}  // namespace tessera::testing
