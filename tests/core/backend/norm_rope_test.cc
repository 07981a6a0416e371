// RMSNorm and RoPE on every available backend against double references; backward ops against
// central differences of the double reference (loss = sum(R .* out)).
// Tolerances: RMSNorm forward rtol 1e-5 + atol 1e-6; gradients rtol 1e-4 + atol 1e-5 (they involve
// an O(D) float reduction). RoPE atol 2e-4 for positions < 2048: a backend may compute the angle
// pos * inv_freq in float32 as HF does (its rounding error is ~pos * 6e-8 rad), the CPU one uses double.
#include "tests/core/backend/backend_test_util.h"

namespace tessera::testing {
namespace {

using NormTest = BackendTest;
TESSERA_INSTANTIATE_BACKEND_TEST(NormTest);

std::vector<double> RefRmsNorm(const std::vector<double>& x, const std::vector<double>& w, int64_t n, int64_t d,
                               double eps, std::vector<double>* rstd = nullptr) {
  std::vector<double> out(n * d);
  if (rstd) rstd->assign(n, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += x[i * d + j] * x[i * d + j];
    const double r = 1.0 / std::sqrt(ss / d + eps);
    for (int64_t j = 0; j < d; ++j) out[i * d + j] = x[i * d + j] * r * w[j];
    if (rstd) (*rstd)[i] = r;
  }
  return out;
}

TEST_P(NormTest, RmsNormForward) {
  const float eps = 1e-6f;
  for (std::vector<int64_t> shape : std::vector<std::vector<int64_t>>{{1, 1}, {3, 7}, {33, 65}, {5, 3, 16}, {64, 1024}}) {
    const int64_t d = shape.back(), n = [&] { int64_t p = 1; for (size_t i = 0; i + 1 < shape.size(); ++i) p *= shape[i]; return p; }();
    std::vector<double> x = RandomValues(n * d, d, -3, 3), w = RandomValues(d, n, 0.5, 1.5);
    Tensor out = Garbage(shape), rstd = Garbage({n});
    ASSERT_TRUE(be().RmsNormForward(Up(x, shape), Up(w, {d}), eps, out, &rstd).ok());
    std::vector<double> want_r;
    std::vector<double> want = RefRmsNorm(x, w, n, d, eps, &want_r);
    ExpectClose(Down(out), want, 1e-6, 1e-5, "RmsNormForward d=" + std::to_string(d));
    ExpectClose(Down(rstd), want_r, 1e-6, 1e-5, "rstd");
    Tensor out2 = Garbage(shape);  // rstd is optional
    ASSERT_TRUE(be().RmsNormForward(Up(x, shape), Up(w, {d}), eps, out2, nullptr).ok());
    ExpectClose(Down(out2), want, 1e-6, 1e-5, "RmsNormForward without rstd");
  }
}

TEST_P(NormTest, RmsNormBackwardMatchesFiniteDifferences) {
  const double eps = 1e-5;
  for (auto [n, d] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 7}, {9, 33}, {4, 65}}) {
    std::vector<double> x = RandomValues(n * d, d, -2, 2), w = RandomValues(d, n, 0.5, 1.5);
    std::vector<double> r = RandomValues(n * d, 7), base = RandomValues(d, 8);
    Tensor tx = Up(x, {n, d}), tw = Up(w, {d}), out = Garbage({n, d}), rstd = Garbage({n});
    ASSERT_TRUE(be().RmsNormForward(tx, tw, static_cast<float>(eps), out, &rstd).ok());
    Tensor dx = Garbage({n, d}), dw = Up(base, {d});
    ASSERT_TRUE(be().RmsNormBackward(tx, tw, rstd, Up(r, {n, d}), dx, &dw).ok());
    auto loss_x = [&](const std::vector<double>& xx) { return DotD(r, RefRmsNorm(xx, w, n, d, eps)); };
    auto loss_w = [&](const std::vector<double>& ww) { return DotD(r, RefRmsNorm(x, ww, n, d, eps)); };
    const std::string tag = " n=" + std::to_string(n) + " d=" + std::to_string(d);
    ExpectClose(Down(dx), NumericalGrad(loss_x, x), 1e-5, 1e-4, "RmsNorm dx" + tag);
    std::vector<double> gw = NumericalGrad(loss_w, w);
    for (int64_t j = 0; j < d; ++j) gw[j] += base[j];  // dweight accumulates
    ExpectClose(Down(dw), gw, 1e-5, 1e-4, "RmsNorm dweight" + tag);
    Tensor dx2 = Garbage({n, d});  // dweight is optional
    ASSERT_TRUE(be().RmsNormBackward(tx, tw, rstd, Up(r, {n, d}), dx2, nullptr).ok());
    ExpectClose(Down(dx2), NumericalGrad(loss_x, x), 1e-5, 1e-4, "RmsNorm dx without dweight" + tag);
  }
}

TEST_P(NormTest, RmsNormRejectsBadShapes) {
  Tensor x = Garbage({3, 4}), out = Garbage({3, 4}), w5 = Garbage({5}), w4 = Garbage({4}), r2 = Garbage({2});
  absl::Status s = be().RmsNormForward(x, w5, 1e-6f, out, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("RmsNormForward: weight has shape [5], expected [4]"), std::string::npos) << s;
  EXPECT_EQ(be().RmsNormForward(x, w4, 1e-6f, out, &r2).code(), absl::StatusCode::kInvalidArgument);
  Tensor out_bad = Garbage({4, 3});
  EXPECT_EQ(be().RmsNormForward(x, w4, 1e-6f, out_bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
  Tensor r3 = Garbage({3}), dx = Garbage({3, 4});
  EXPECT_EQ(be().RmsNormBackward(x, w4, r2, x, dx, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be().RmsNormBackward(x, w4, r3, x, dx, &w5).code(), absl::StatusCode::kInvalidArgument);
}

using RopeTest = BackendTest;
TESSERA_INSTANTIATE_BACKEND_TEST(RopeTest);

std::vector<double> RefRope(const std::vector<double>& x, const std::vector<int32_t>& pos, int64_t n, int64_t h,
                            int64_t hd, double theta, bool inverse) {
  std::vector<double> out = x;
  const int64_t half = hd / 2;
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const double a = pos[t] * std::pow(theta, -2.0 * i / hd) * (inverse ? -1.0 : 1.0);
      for (int64_t k = 0; k < h; ++k) {
        const double lo = x[(t * h + k) * hd + i], hi = x[(t * h + k) * hd + i + half];
        out[(t * h + k) * hd + i] = lo * std::cos(a) - hi * std::sin(a);
        out[(t * h + k) * hd + i + half] = hi * std::cos(a) + lo * std::sin(a);
      }
    }
  }
  return out;
}

TEST_P(RopeTest, ForwardInverseAndGradient) {
  for (auto [n, h, hd] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{1, 1, 2}, {3, 2, 8}, {7, 3, 64}, {33, 4, 128}}) {
    for (double theta : {10000.0, 1000000.0}) {
      std::vector<double> x = RandomValues(n * h * hd, n + hd);
      std::vector<int32_t> pos = RandomInts(n, n, 0, 2048);
      pos[0] = 0;
      Tensor t = Up(x, {n, h, hd}), tp = UpI(pos, {n});
      ASSERT_TRUE(be().Rope(t, tp, static_cast<float>(theta), false).ok());
      const std::string tag = " n=" + std::to_string(n) + " hd=" + std::to_string(hd);
      ExpectClose(Down(t), RefRope(x, pos, n, h, hd, theta, false), 2e-4, 1e-5, "Rope" + tag);
      ASSERT_TRUE(be().Rope(t, tp, static_cast<float>(theta), true).ok());
      ExpectClose(Down(t), x, 1e-5, 1e-5, "Rope inverse(forward)" + tag);
      // The inverse is the backward: d/dx sum(R .* rope(x)) = rope_inverse(R).
      if (n * h * hd <= 1000) {
        std::vector<double> r = RandomValues(n * h * hd, 3);
        Tensor tr = Up(r, {n, h, hd});
        ASSERT_TRUE(be().Rope(tr, tp, static_cast<float>(theta), true).ok());
        auto loss = [&](const std::vector<double>& xx) { return DotD(r, RefRope(xx, pos, n, h, hd, theta, false)); };
        ExpectClose(Down(tr), NumericalGrad(loss, x), 2e-4, 1e-4, "Rope gradient" + tag);
      }
    }
  }
}

TEST_P(RopeTest, RejectsBadShapes) {
  Tensor odd = Garbage({2, 1, 3}), x = Garbage({2, 1, 4}), rank2 = Garbage({2, 4});
  Tensor pos2 = UpI({0, 1}, {2}), pos3 = UpI({0, 1, 2}, {3});
  EXPECT_EQ(be().Rope(odd, pos2, 10000.0f, false).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be().Rope(rank2, pos2, 10000.0f, false).code(), absl::StatusCode::kInvalidArgument);
  absl::Status s = be().Rope(x, pos3, 10000.0f, false);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("positions"), std::string::npos) << s;
}

}  // namespace
}  // namespace tessera::testing
