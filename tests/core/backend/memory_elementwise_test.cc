// Memory ops, element-wise ops and SwiGLU on every available backend, against double references.
// Tolerances: element-wise results are one or two float roundings from the reference (rtol 1e-6 /
// 2e-6); SwiGLU involves exp (rtol 1e-5); gradients vs central differences of the double reference
// (rtol 1e-4, atol 1e-5).
#include <cstring>
#include <limits>

#include "tests/core/backend/backend_test_util.h"

namespace tessera::testing {
namespace {

using MemoryTest = BackendTest;
TESSERA_INSTANTIATE_BACKEND_TEST(MemoryTest);

TEST_P(MemoryTest, AllocFillAndRoundTrip) {
  for (int64_t n : {1, 3, 7, 33, 65, 1000}) {
    absl::StatusOr<Tensor> t = be().Alloc({n}, DType::kF32);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->numel(), n);
    EXPECT_EQ(t->device(), be().device());
    if (GetParam() == "cpu") {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(t->raw()) % 64, 0u);
    }
    ASSERT_TRUE(be().Fill(*t, 2.5f).ok());
    EXPECT_EQ(Down(*t), std::vector<float>(n, 2.5f));
    std::vector<double> vals = RandomValues(n, n);
    Tensor u = Up(vals, {n});
    ExpectClose(Down(u), vals, 0, 0, "round trip");
  }
  absl::StatusOr<Tensor> empty = be().Alloc({0, 4}, DType::kF32);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->numel(), 0);
  EXPECT_TRUE(be().Fill(*empty, 1.0f).ok());
  EXPECT_FALSE(be().Alloc({-1}, DType::kF32).ok());
}

// BackendOptions::memory_limit_bytes: allocations past the cap are RESOURCE_EXHAUSTED naming the limit,
// freeing gives the bytes back, and a tensor may outlive its backend.
TEST_P(MemoryTest, MemoryLimitCapsLiveAllocations) {
  BackendOptions options;
  options.memory_limit_bytes = 3 * 4096;
  absl::StatusOr<std::unique_ptr<Backend>> limited = MakeBackend(GetParam(), options);
  ASSERT_TRUE(limited.ok()) << limited.status();
  absl::StatusOr<Tensor> a = (*limited)->Alloc({1024}, DType::kF32), b = (*limited)->Alloc({1024}, DType::kF32);
  ASSERT_TRUE(a.ok() && b.ok());
  absl::StatusOr<Tensor> c = (*limited)->Alloc({2048}, DType::kF32);  // 8 KiB more: over the 12 KiB cap
  ASSERT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted) << c.status();
  EXPECT_NE(c.status().message().find("memory limit of 12288 bytes"), std::string::npos) << c.status();
  absl::StatusOr<Tensor> d = (*limited)->Alloc({1024}, DType::kF32);  // the failure took nothing
  ASSERT_TRUE(d.ok()) << d.status();
  *a = Tensor();
  *b = Tensor();
  c = (*limited)->Alloc({2048}, DType::kF32);  // fits again once two are freed
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*limited)->Fill(*c, 1.0f).ok());
  limited->reset();  // c outlives its backend and gives its bytes back later without harm
  *c = Tensor();
  // Without a limit nothing is capped.
  EXPECT_TRUE(be().Alloc({4096}, DType::kF32).ok());
}

TEST_P(MemoryTest, FillEveryDtype) {
  absl::StatusOr<Tensor> i = be().Alloc({5}, DType::kI32);
  ASSERT_TRUE(i.ok());
  ASSERT_TRUE(be().Fill(*i, 7.0f).ok());
  EXPECT_EQ(DownI(*i), std::vector<int32_t>(5, 7));
  for (DType d : {DType::kBF16, DType::kF16}) {
    absl::StatusOr<Tensor> h = be().Alloc({3, 3}, d);
    ASSERT_TRUE(h.ok());
    ASSERT_TRUE(be().Fill(*h, 1.5f).ok());
    EXPECT_EQ(Down(*h), std::vector<float>(9, 1.5f));
  }
}

TEST_P(MemoryTest, CopyConvertsBetweenFloatDtypes) {
  std::vector<double> vals = RoundToF32({1.0, -2.5, 0.15625, 3.0e4, -1.0e-3, 0.0, 100.25});
  Tensor src = Up(vals, {7});
  for (DType d : {DType::kBF16, DType::kF16, DType::kF32}) {
    absl::StatusOr<Tensor> half = be().Alloc({7}, d);
    ASSERT_TRUE(half.ok());
    ASSERT_TRUE(be().Copy(src, *half).ok());
    std::vector<float> got = Down(*half);
    for (size_t k = 0; k < vals.size(); ++k) {
      const float want = d == DType::kBF16 ? Bf16ToF32(F32ToBf16(static_cast<float>(vals[k])))
                         : d == DType::kF16 ? F16ToF32(F32ToF16(static_cast<float>(vals[k])))
                                            : static_cast<float>(vals[k]);
      EXPECT_EQ(got[k], want) << DTypeName(d) << " element " << k;
    }
    absl::StatusOr<Tensor> back = be().Alloc({7}, DType::kF32);
    ASSERT_TRUE(be().Copy(*half, *back).ok());
    EXPECT_EQ(Down(*back), got);
  }
  // Reshaped views copy by element count.
  Tensor dst = Garbage({7, 1});
  ASSERT_TRUE(be().Copy(src, dst).ok());
  ExpectClose(Down(dst), vals, 0, 0, "copy");
}

TEST_P(MemoryTest, CopyManyCopiesEveryPairIntoViews) {
  // The KV-cache append: rows of one batch tensor into row ranges of several per-sequence caches,
  // one pair converting to bf16; an empty pair; then overlapping pairs, which must act in order.
  Tensor batch = Up(std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {6, 2});
  Tensor cache_a = Up(std::vector<float>(8, -1.0f), {4, 2});
  Tensor cache_b = Up(std::vector<float>(6, -1.0f), {3, 2});
  absl::StatusOr<Tensor> cache_c = be().Alloc({2, 2}, DType::kBF16);
  ASSERT_TRUE(cache_c.ok());
  ASSERT_TRUE(be().Fill(*cache_c, -1.0f).ok());
  Tensor src0 = batch.Rows(0, 2), src1 = batch.Rows(2, 3), src2 = batch.Rows(5, 1), none = batch.Rows(0, 0);
  Tensor dst0 = cache_a.Rows(1, 2), dst1 = cache_b.Rows(0, 3), dst2 = cache_c->Rows(1, 1), dst_none = cache_a.Rows(4, 0);
  std::vector<CopyPair> pairs = {{&src0, &dst0}, {&src1, &dst1}, {&src2, &dst2}, {&none, &dst_none}};
  ASSERT_TRUE(be().CopyMany(pairs).ok());
  EXPECT_EQ(Down(cache_a), (std::vector<float>{-1, -1, 1, 2, 3, 4, -1, -1}));
  EXPECT_EQ(Down(cache_b), (std::vector<float>{5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(Down(*cache_c), (std::vector<float>{-1, -1, 11, 12}));

  // Pair 1 reads what pair 0 wrote: the pairs act as sequential copies, in order.
  Tensor t = Up(std::vector<float>{1, 2, 3, 4}, {4, 1});
  Tensor r01 = t.Rows(0, 1), r1 = t.Rows(1, 1), r2 = t.Rows(2, 1);
  std::vector<CopyPair> chain = {{&r01, &r1}, {&r1, &r2}};
  ASSERT_TRUE(be().CopyMany(chain).ok());
  EXPECT_EQ(Down(t), (std::vector<float>{1, 1, 1, 4}));

  Tensor wrong = Garbage({3});
  std::vector<CopyPair> bad = {{&src0, &dst0}, {&src1, &wrong}};
  absl::Status s = be().CopyMany(bad);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("pairs[1]"), std::string::npos) << s;
  std::vector<CopyPair> null_pair = {{&src0, nullptr}};
  EXPECT_EQ(be().CopyMany(null_pair).code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(MemoryTest, RejectsBadArguments) {
  Tensor a = Up(std::vector<float>(6, 1.0f), {2, 3});
  Tensor b = Garbage({5});
  EXPECT_EQ(be().Copy(a, b).code(), absl::StatusCode::kInvalidArgument);
  std::vector<float> host(5);
  EXPECT_EQ(be().CopyToHost(a, host.data(), host.size() * 4).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be().CopyFromHost(host.data(), host.size() * 4, a).code(), absl::StatusCode::kInvalidArgument);
  Tensor ints = UpI({1, 2, 3, 4, 5, 6}, {6});
  Tensor f6 = Garbage({6});
  EXPECT_EQ(be().Copy(ints, f6).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be().Add(a, ints, f6).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be().Add(a, b, f6).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(be().Axpy(1.0f, a, b).code(), absl::StatusCode::kInvalidArgument);
  Tensor undefined;
  EXPECT_EQ(be().Scale(undefined, 2.0f).code(), absl::StatusCode::kInvalidArgument);
  Tensor g5 = Garbage({5});
  absl::Status s = be().SwiGluForward(a, g5, f6);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("up"), std::string::npos) << s;
}

using ElementwiseTest = BackendTest;
TESSERA_INSTANTIATE_BACKEND_TEST(ElementwiseTest);

TEST_P(ElementwiseTest, AddAxpyScaleSumSquares) {
  for (int64_t n : {1, 3, 7, 33, 65, 4097, 100003}) {
    std::vector<double> a = RandomValues(n, 1 + n), b = RandomValues(n, 2 + n, -3, 3);
    Tensor ta = Up(a, {n}), tb = Up(b, {n}), out = Garbage({n});
    ASSERT_TRUE(be().Add(ta, tb, out).ok());
    std::vector<double> want(n);
    for (int64_t i = 0; i < n; ++i) want[i] = a[i] + b[i];
    ExpectClose(Down(out), want, 0, 1e-6, "Add");
    ASSERT_TRUE(be().Add(ta, tb, ta).ok());  // out aliases a
    ExpectClose(Down(ta), want, 0, 1e-6, "Add aliased");

    Tensor y = Up(b, {n});
    ASSERT_TRUE(be().Axpy(-0.75f, Up(a, {n}), y).ok());
    for (int64_t i = 0; i < n; ++i) want[i] = b[i] - 0.75 * a[i];
    ExpectClose(Down(y), want, 1e-7, 2e-6, "Axpy");

    ASSERT_TRUE(be().Scale(y, 3.0f).ok());
    for (int64_t i = 0; i < n; ++i) want[i] = static_cast<float>(want[i]) * 3.0;
    ExpectClose(Down(y), want, 1e-6, 2e-6, "Scale");

    absl::StatusOr<double> ss = be().SumSquares(Up(b, {n}));
    ASSERT_TRUE(ss.ok());
    double ref = 0.0;
    for (double v : b) ref += v * v;
    // 1e-6 relative: enough for global-norm clipping; lets a device accumulate partial sums in float.
    EXPECT_NEAR(*ss, ref, 1e-6 * ref + 1e-12) << "SumSquares n=" << n;
  }
}

double Silu(double g) { return g / (1.0 + std::exp(-g)); }

TEST_P(ElementwiseTest, SwiGluForwardMatchesReference) {
  for (auto [n, f] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 7}, {33, 65}, {64, 512}}) {
    std::vector<double> g = RandomValues(n * f, n, -8, 8), u = RandomValues(n * f, f, -2, 2);
    Tensor out = Garbage({n, f});
    ASSERT_TRUE(be().SwiGluForward(Up(g, {n, f}), Up(u, {n, f}), out).ok());
    std::vector<double> want(n * f);
    for (int64_t i = 0; i < n * f; ++i) want[i] = Silu(g[i]) * u[i];
    ExpectClose(Down(out), want, 1e-6, 1e-5, "SwiGluForward");
  }
}

TEST_P(ElementwiseTest, SwiGluBackwardMatchesFiniteDifferences) {
  const int64_t n = 5, f = 13;
  std::vector<double> g = RandomValues(n * f, 11, -6, 6), u = RandomValues(n * f, 12, -2, 2);
  std::vector<double> r = RandomValues(n * f, 13);  // loss = sum(r .* out)
  Tensor dg = Garbage({n, f}), du = Garbage({n, f});
  ASSERT_TRUE(be().SwiGluBackward(Up(g, {n, f}), Up(u, {n, f}), Up(r, {n, f}), dg, du).ok());
  auto loss_g = [&](const std::vector<double>& gg) {
    double s = 0;
    for (int64_t i = 0; i < n * f; ++i) s += r[i] * Silu(gg[i]) * u[i];
    return s;
  };
  auto loss_u = [&](const std::vector<double>& uu) {
    double s = 0;
    for (int64_t i = 0; i < n * f; ++i) s += r[i] * Silu(g[i]) * uu[i];
    return s;
  };
  ExpectClose(Down(dg), NumericalGrad(loss_g, g), 1e-5, 1e-4, "dgate");
  ExpectClose(Down(du), NumericalGrad(loss_u, u), 1e-5, 1e-4, "dup");
}

}  // namespace
}  // namespace tessera::testing
