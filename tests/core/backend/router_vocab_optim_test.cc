// Router, log-softmax, cross-entropy and AdamW on every available backend against double
// references; RouterBackward and CrossEntropyBackward against central differences of the double
// reference. Tolerances: probabilities/log-probabilities atol 1e-5 + rtol 1e-5 (logits up to +-50);
// gradients atol 1e-5 + rtol 1e-4; AdamW parameters rtol 1e-5 + atol 1e-6 after 6 steps (AdamWMany: 4).
#include <algorithm>
#include <numeric>

#include "tests/core/backend/backend_test_util.h"

namespace tessera::testing {
namespace {

using RouterTest = BackendTest;
TESSERA_INSTANTIATE_BACKEND_TEST(RouterTest);

std::vector<double> RefSoftmaxRow(const double* x, int64_t e) {
  std::vector<double> p(e);
  const double m = *std::max_element(x, x + e);
  double s = 0;
  for (int64_t j = 0; j < e; ++j) s += (p[j] = std::exp(x[j] - m));
  for (double& v : p) v /= s;
  return p;
}

// The k largest (by logit, hence by probability), ties to the lower index, in descending order.
std::vector<int32_t> RefTopK(const double* x, int64_t e, int k) {
  std::vector<int32_t> order(e);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return x[a] > x[b]; });
  order.resize(k);
  return order;
}

// topk_w as a function of the logits, for a fixed selection.
std::vector<double> RefTopKWeights(const std::vector<double>& logits, const std::vector<int32_t>& idx, int64_t n,
                                   int64_t e, int k, bool normalize) {
  std::vector<double> w(n * k);
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> p = RefSoftmaxRow(&logits[i * e], e);
    double s = 0;
    for (int t = 0; t < k; ++t) s += (w[i * k + t] = p[idx[i * k + t]]);
    if (normalize) {
      for (int t = 0; t < k; ++t) w[i * k + t] /= s;
    }
  }
  return w;
}

TEST_P(RouterTest, ForwardMatchesReference) {
  struct Case { int64_t n, e; int k; };
  for (Case c : {Case{1, 1, 1}, Case{3, 8, 2}, Case{33, 16, 4}, Case{7, 60, 4}, Case{65, 64, 8}, Case{5, 7, 7}}) {
    for (bool normalize : {false, true}) {
      std::vector<double> logits = RandomValues(c.n * c.e, c.n + c.e, -3, 3);
      Tensor probs = Garbage({c.n, c.e}), w = Garbage({c.n, c.k});
      absl::StatusOr<Tensor> idx = be().Alloc({c.n, c.k}, DType::kI32);
      ASSERT_TRUE(idx.ok());
      ASSERT_TRUE(be().RouterForward(Up(logits, {c.n, c.e}), c.k, normalize, probs, *idx, w).ok());
      std::vector<double> want_p;
      std::vector<int32_t> want_idx;
      for (int64_t i = 0; i < c.n; ++i) {
        std::vector<double> p = RefSoftmaxRow(&logits[i * c.e], c.e);
        want_p.insert(want_p.end(), p.begin(), p.end());
        std::vector<int32_t> top = RefTopK(&logits[i * c.e], c.e, c.k);
        want_idx.insert(want_idx.end(), top.begin(), top.end());
      }
      const std::string tag = " n=" + std::to_string(c.n) + " e=" + std::to_string(c.e) + " k=" +
                              std::to_string(c.k) + (normalize ? " normalized" : "");
      ExpectClose(Down(probs), want_p, 1e-6, 1e-5, "probs" + tag);
      EXPECT_EQ(DownI(*idx), want_idx) << tag;
      ExpectClose(Down(w), RefTopKWeights(logits, want_idx, c.n, c.e, c.k, normalize), 1e-6, 1e-5, "topk_w" + tag);
    }
  }
}

TEST_P(RouterTest, TiesGoToTheLowerIndex) {
  std::vector<double> logits = {1, 3, 3, 0, 3, 2,   // three-way tie at the top
                                0, 0, 0, 0, 0, 0};  // all equal
  Tensor probs = Garbage({2, 6}), w = Garbage({2, 4});
  absl::StatusOr<Tensor> idx = be().Alloc({2, 4}, DType::kI32);
  ASSERT_TRUE(be().RouterForward(Up(logits, {2, 6}), 4, true, probs, *idx, w).ok());
  EXPECT_EQ(DownI(*idx), (std::vector<int32_t>{1, 2, 4, 5, 0, 1, 2, 3}));
  ExpectClose(Down(w), RefTopKWeights(logits, {1, 2, 4, 5, 0, 1, 2, 3}, 2, 6, 4, true), 1e-6, 1e-5, "tied weights");
}

TEST_P(RouterTest, BackwardMatchesFiniteDifferences) {
  struct Case { int64_t n, e; int k; };
  for (Case c : {Case{1, 1, 1}, Case{3, 8, 2}, Case{9, 16, 4}, Case{4, 5, 5}}) {
    for (bool normalize : {false, true}) {
      std::vector<double> logits = RandomValues(c.n * c.e, 3 * c.n + c.e, -2, 2), g = RandomValues(c.n * c.k, 9);
      Tensor probs = Garbage({c.n, c.e}), w = Garbage({c.n, c.k}), dl = Garbage({c.n, c.e});
      absl::StatusOr<Tensor> idx = be().Alloc({c.n, c.k}, DType::kI32);
      ASSERT_TRUE(be().RouterForward(Up(logits, {c.n, c.e}), c.k, normalize, probs, *idx, w).ok());
      ASSERT_TRUE(be().RouterBackward(probs, *idx, w, normalize, Up(g, {c.n, c.k}), dl).ok());
      const std::vector<int32_t> sel = DownI(*idx);
      auto loss = [&](const std::vector<double>& x) { return DotD(g, RefTopKWeights(x, sel, c.n, c.e, c.k, normalize)); };
      ExpectClose(Down(dl), NumericalGrad(loss, logits), 1e-5, 1e-4,
                  "dlogits e=" + std::to_string(c.e) + (normalize ? " normalized" : ""));
    }
  }
}

TEST_P(RouterTest, RejectsBadArguments) {
  Tensor logits = Garbage({3, 4}), probs = Garbage({3, 4}), w = Garbage({3, 2});
  absl::StatusOr<Tensor> idx = be().Alloc({3, 2}, DType::kI32);
  EXPECT_EQ(be().RouterForward(logits, 0, false, probs, *idx, w).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be().RouterForward(logits, 5, false, probs, *idx, w).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be().RouterForward(logits, 3, false, probs, *idx, w).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be().RouterForward(logits, 2, false, probs, w, w).code(), absl::StatusCode::kInvalidArgument);
  Tensor bad_idx = UpI({0, 1, 2, 4, 0, 1}, {3, 2});  // 4 is not an expert
  Tensor dl = Garbage({3, 4});
  absl::Status s = be().RouterBackward(probs, bad_idx, w, true, w, dl);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("topk_idx"), std::string::npos) << s;
}

using VocabTest = BackendTest;
TESSERA_INSTANTIATE_BACKEND_TEST(VocabTest);

double RefLse(const double* x, int64_t v) {
  const double m = *std::max_element(x, x + v);
  double s = 0;
  for (int64_t j = 0; j < v; ++j) s += std::exp(x[j] - m);
  return m + std::log(s);
}

TEST_P(VocabTest, LogSoftmaxAndCrossEntropyForward) {
  for (auto [n, v, range] : std::vector<std::tuple<int64_t, int64_t, double>>{
           {1, 1, 1}, {3, 7, 5}, {33, 65, 50}, {4, 32000, 10}, {2, 3, 80}}) {
    std::vector<double> x = RandomValues(n * v, n + v, -range, range);
    std::vector<int32_t> t = RandomInts(n, v, -1, static_cast<int32_t>(v));  // some ignored (-1)
    t[0] = static_cast<int32_t>(v - 1);
    Tensor tx = Up(x, {n, v}), out = Garbage({n, v}), loss = Garbage({n}), lse = Garbage({n});
    ASSERT_TRUE(be().LogSoftmax(tx, out).ok());
    ASSERT_TRUE(be().CrossEntropyForward(tx, UpI(t, {n}), loss, &lse).ok());
    std::vector<double> want(n * v), want_loss(n), want_lse(n);
    for (int64_t i = 0; i < n; ++i) {
      want_lse[i] = RefLse(&x[i * v], v);
      for (int64_t j = 0; j < v; ++j) want[i * v + j] = x[i * v + j] - want_lse[i];
      want_loss[i] = t[i] < 0 ? 0.0 : want_lse[i] - x[i * v + t[i]];
    }
    const std::string tag = " n=" + std::to_string(n) + " v=" + std::to_string(v);
    const double atol = 1e-5 + 2e-7 * range;
    ExpectClose(Down(out), want, atol, 1e-5, "LogSoftmax" + tag);
    ExpectClose(Down(loss), want_loss, atol, 1e-5, "CrossEntropy loss" + tag);
    ExpectClose(Down(lse), want_lse, atol, 1e-5, "CrossEntropy lse" + tag);
    ASSERT_TRUE(be().LogSoftmax(tx, tx).ok());  // in place
    ExpectClose(Down(tx), want, atol, 1e-5, "LogSoftmax in place" + tag);
    Tensor loss2 = Garbage({n});
    ASSERT_TRUE(be().CrossEntropyForward(Up(x, {n, v}), UpI(t, {n}), loss2, nullptr).ok());
    ExpectClose(Down(loss2), want_loss, atol, 1e-5, "CrossEntropy without lse" + tag);
  }
}

TEST_P(VocabTest, CrossEntropyBackwardMatchesFiniteDifferences) {
  for (auto [n, v] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 7}, {6, 33}}) {
    std::vector<double> x = RandomValues(n * v, n * v, -4, 4), dloss = RandomValues(n, 3, 0.5, 2);
    std::vector<int32_t> t = RandomInts(n, 5, 0, static_cast<int32_t>(v));
    if (n > 1) t[1] = -1;  // an ignored row
    Tensor tx = Up(x, {n, v}), tt = UpI(t, {n}), loss = Garbage({n}), lse = Garbage({n}), dx = Garbage({n, v});
    ASSERT_TRUE(be().CrossEntropyForward(tx, tt, loss, &lse).ok());
    ASSERT_TRUE(be().CrossEntropyBackward(tx, tt, lse, Up(dloss, {n}), dx).ok());
    auto f = [&](const std::vector<double>& xx) {
      double l = 0;
      for (int64_t i = 0; i < n; ++i) {
        if (t[i] >= 0) l += dloss[i] * (RefLse(&xx[i * v], v) - xx[i * v + t[i]]);
      }
      return l;
    };
    ExpectClose(Down(dx), NumericalGrad(f, x), 1e-5, 1e-4, "CrossEntropy dlogits v=" + std::to_string(v));
  }
}

TEST_P(VocabTest, RejectsOutOfRangeTargets) {
  Tensor x = Up(RandomValues(12, 1), {3, 4}), loss = Up(std::vector<double>(3, 7.0), {3});
  Tensor lse = Garbage({3}), dx = Garbage({3, 4});
  Tensor bad = UpI({0, 4, 1}, {3});
  absl::Status s = be().CrossEntropyForward(x, bad, loss, &lse);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("targets[1]"), std::string::npos) << s;
  EXPECT_EQ(Down(loss), std::vector<float>(3, 7.0f));
  EXPECT_EQ(be().CrossEntropyBackward(x, bad, lse, loss, dx).code(), absl::StatusCode::kInvalidArgument);
  Tensor short_targets = UpI({0, 1}, {2});
  EXPECT_EQ(be().CrossEntropyForward(x, short_targets, loss, nullptr).code(), absl::StatusCode::kInvalidArgument);
  Tensor out_bad = Garbage({4, 3});
  EXPECT_EQ(be().LogSoftmax(x, out_bad).code(), absl::StatusCode::kInvalidArgument);
}

using OptimTest = BackendTest;
TESSERA_INSTANTIATE_BACKEND_TEST(OptimTest);

TEST_P(OptimTest, AdamWMatchesReferenceOverSteps) {
  for (int64_t n : {1, 7, 65, 10007, 40009}) {  // 40009: several ParallelFor chunks (grain 2^14)
    AdamWParams p;
    p.lr = 1e-2f;
    p.beta1 = 0.9f;
    p.beta2 = 0.95f;
    p.eps = 1e-8f;
    p.weight_decay = 0.1f;
    std::vector<double> w = RandomValues(n, n), m(n, 0.0), v(n, 0.0);
    Tensor tw = Up(w, {n}), tm = Up(m, {n}), tv = Up(v, {n});
    for (int step = 1; step <= 6; ++step) {
      std::vector<double> g = RandomValues(n, 100 + step, -2, 2);
      p.step = step;
      ASSERT_TRUE(be().AdamW(tw, Up(g, {n}), tm, tv, p).ok());
      const double bc1 = 1 - std::pow(0.9, step), bc2 = 1 - std::pow(static_cast<double>(0.95f), step);
      for (int64_t i = 0; i < n; ++i) {
        m[i] = 0.9 * m[i] + 0.1 * g[i];
        v[i] = 0.95f * v[i] + (1 - 0.95f) * g[i] * g[i];
        w[i] -= 1e-2 * ((m[i] / bc1) / (std::sqrt(v[i] / bc2) + 1e-8) + 0.1 * w[i]);
      }
    }
    ExpectClose(Down(tw), w, 1e-6, 1e-5, "AdamW param n=" + std::to_string(n));
    ExpectClose(Down(tm), m, 1e-6, 1e-5, "AdamW m");
    ExpectClose(Down(tv), v, 1e-6, 1e-5, "AdamW v");
  }
}

// AdamWMany = AdamW per entry (its own weight decay) + the narrow copy, against the double reference;
// three entries of different lengths in one call, over 4 steps.
TEST_P(OptimTest, AdamWManyMatchesReferencePerEntry) {
  const std::vector<int64_t> sizes = {7, 10007, 65};
  const std::vector<float> decays = {0.1f, 0.0f, 0.3f};
  AdamWParams p;
  p.lr = 1e-2f;
  p.beta1 = 0.9f;
  p.beta2 = 0.95f;
  p.weight_decay = 5.0f;  // ignored
  std::vector<std::vector<double>> w, m, v;
  std::vector<Tensor> tw, tm, tv, tn;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const int64_t n = sizes[i];
    w.push_back(RandomValues(n, 10 + i));
    m.emplace_back(n, 0.0);
    v.emplace_back(n, 0.0);
    tw.push_back(Up(w.back(), {n}));
    tm.push_back(Up(m.back(), {n}));
    tv.push_back(Up(v.back(), {n}));
    auto narrow = be().Alloc({n}, DType::kBF16);
    ASSERT_TRUE(narrow.ok()) << narrow.status();
    tn.push_back(*narrow);
  }
  for (int step = 1; step <= 4; ++step) {
    p.step = step;
    std::vector<Tensor> tg;
    std::vector<std::vector<double>> g;
    for (size_t i = 0; i < sizes.size(); ++i) {
      g.push_back(RandomValues(sizes[i], 100 * step + i, -2, 2));
      tg.push_back(Up(g.back(), {sizes[i]}));
    }
    std::vector<AdamWTensor> entries;
    for (size_t i = 0; i < sizes.size(); ++i) {
      entries.push_back({&tw[i], &tg[i], &tm[i], &tv[i], i == 1 ? nullptr : &tn[i], decays[i]});
    }
    ASSERT_TRUE(be().AdamWMany(entries, p).ok());
    const double bc1 = 1 - std::pow(0.9, step), bc2 = 1 - std::pow(static_cast<double>(0.95f), step);
    for (size_t i = 0; i < sizes.size(); ++i) {
      for (int64_t j = 0; j < sizes[i]; ++j) {
        m[i][j] = 0.9 * m[i][j] + 0.1 * g[i][j];
        v[i][j] = 0.95f * v[i][j] + (1 - 0.95f) * g[i][j] * g[i][j];
        w[i][j] -= 1e-2 * ((m[i][j] / bc1) / (std::sqrt(v[i][j] / bc2) + 1e-8) + decays[i] * w[i][j]);
      }
    }
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    const std::string what = "entry " + std::to_string(i);
    const std::vector<float> got = Down(tw[i]);
    ExpectClose(got, w[i], 1e-6, 1e-5, what + " param");
    ExpectClose(Down(tm[i]), m[i], 1e-6, 1e-5, what + " m");
    ExpectClose(Down(tv[i]), v[i], 1e-6, 1e-5, what + " v");
    if (i == 1) continue;  // no narrow copy
    // The narrow copy is the bf16 rounding of the parameter's final value, exactly as Copy makes it.
    auto want = be().Alloc({sizes[i]}, DType::kBF16);
    ASSERT_TRUE(want.ok());
    ASSERT_TRUE(be().Copy(tw[i], *want).ok());
    EXPECT_EQ(Down(tn[i]), Down(*want)) << what << " narrow";
  }
}

// Entries that write the same tensors run as if in order: [A, A] is two AdamW steps of A with the
// same step count (devices must not fuse them into one racing launch).
TEST_P(OptimTest, AdamWManyOverlappingEntriesRunInOrder) {
  const int64_t n = 300;
  AdamWParams p;
  p.lr = 1e-2f;
  p.step = 3;
  std::vector<double> w0 = RandomValues(n, 1), g = RandomValues(n, 2, -1, 1), m0 = RandomValues(n, 3, -0.1, 0.1),
                      v0 = RandomValues(n, 4, 0.0, 0.1);
  Tensor a = Up(w0, {n}), am = Up(m0, {n}), av = Up(v0, {n}), tg = Up(g, {n});
  Tensor b = Up(w0, {n}), bm = Up(m0, {n}), bv = Up(v0, {n});
  const AdamWTensor e{&a, &tg, &am, &av, nullptr, 0.2f};
  const std::vector<AdamWTensor> twice = {e, e};
  ASSERT_TRUE(be().AdamWMany(twice, p).ok());
  p.weight_decay = 0.2f;
  ASSERT_TRUE(be().AdamW(b, tg, bm, bv, p).ok());
  ASSERT_TRUE(be().AdamW(b, tg, bm, bv, p).ok());
  EXPECT_EQ(Down(a), Down(b));
  EXPECT_EQ(Down(am), Down(bm));
  EXPECT_EQ(Down(av), Down(bv));
}

TEST_P(OptimTest, AdamWManyRejectsBadArgumentsNamingTheEntry) {
  Tensor w = Garbage({4}), g = Garbage({4}), m = Garbage({4}), v = Garbage({4}), v3 = Garbage({3});
  AdamWParams p;
  const std::vector<AdamWTensor> short_v = {{&w, &g, &m, &v}, {&w, &g, &m, &v3}};
  absl::Status s = be().AdamWMany(short_v, p);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("entries[1]"), std::string::npos) << s;
  const std::vector<AdamWTensor> null_grad = {{&w, nullptr, &m, &v}};
  EXPECT_EQ(be().AdamWMany(null_grad, p).code(), absl::StatusCode::kInvalidArgument);
  Tensor narrow3 = Garbage({3});
  const std::vector<AdamWTensor> short_narrow = {{&w, &g, &m, &v, &narrow3}};
  EXPECT_EQ(be().AdamWMany(short_narrow, p).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(be().AdamWMany({}, p).ok());
}

TEST_P(OptimTest, AdamWRejectsBadArguments) {
  Tensor w = Garbage({4}), g = Garbage({4}), m = Garbage({4}), v3 = Garbage({3});
  AdamWParams p;
  EXPECT_EQ(be().AdamW(w, g, m, v3, p).code(), absl::StatusCode::kInvalidArgument);
  p.step = 0;
  EXPECT_EQ(be().AdamW(w, g, m, m, p).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::testing
