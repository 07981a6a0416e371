#include "tests/core/backend_cuda/cuda_test_util.h"

#include <cmath>

namespace tessera::testing_cuda {

std::vector<float> RoundTo(const std::vector<float>& v, DType dt) {
  std::vector<float> out(v);
  if (dt == DType::kBF16) {
    for (float& x : out) x = Bf16ToF32(F32ToBf16(x));
  } else if (dt == DType::kF16) {
    for (float& x : out) x = F16ToF32(F32ToF16(x));
  }
  return out;
}

void CudaParityTest::SetUp() {
  auto gpu = MakeCudaBackend(0);
  if (!gpu.ok()) GTEST_SKIP() << "no CUDA device: " << gpu.status().message();
  cpu_ = MakeCpuBackend();
  if (cpu_ == nullptr) GTEST_SKIP() << "CPU backend not available in this build";
  gpu_ = std::move(*gpu);
}

std::vector<float> CudaParityTest::Rand(size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng_);
  return v;
}

std::vector<int32_t> CudaParityTest::RandInt(size_t n, int32_t lo, int32_t hi) {
  std::uniform_int_distribution<int32_t> d(lo, hi);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = d(rng_);
  return v;
}

Tensor CudaParityTest::Make(Backend& b, const std::vector<float>& v, std::vector<int64_t> shape, DType dt) {
  auto t = b.Alloc(std::move(shape), dt);
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok()) return Tensor();
  EXPECT_EQ(static_cast<size_t>(t->numel()), v.size());
  absl::Status s;
  if (dt == DType::kF32) {
    s = b.CopyFromHost(v.data(), t->nbytes(), *t);
  } else {
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = dt == DType::kBF16 ? F32ToBf16(v[i]) : F32ToF16(v[i]);
    s = b.CopyFromHost(h.data(), t->nbytes(), *t);
  }
  EXPECT_TRUE(s.ok()) << s;
  return *t;
}

Tensor CudaParityTest::MakeI(Backend& b, const std::vector<int32_t>& v, std::vector<int64_t> shape) {
  auto t = b.FromHost(v, std::move(shape));
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : Tensor();
}

std::vector<float> CudaParityTest::Get(Backend& b, const Tensor& t) {
  auto v = b.ToHostF32(t);
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *v : std::vector<float>();
}

std::vector<int32_t> CudaParityTest::GetI(Backend& b, const Tensor& t) {
  auto v = b.ToHostI32(t);
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *v : std::vector<int32_t>();
}

CudaParityTest::Pair CudaParityTest::Both(const std::vector<float>& v, const std::vector<int64_t>& shape, DType dt) {
  return Pair{Make(*cpu_, RoundTo(v, dt), shape), Make(*gpu_, v, shape, dt)};
}

CudaParityTest::Pair CudaParityTest::BothI(const std::vector<int32_t>& v, const std::vector<int64_t>& shape) {
  return Pair{MakeI(*cpu_, v, shape), MakeI(*gpu_, v, shape)};
}

CudaParityTest::Pair CudaParityTest::BothRand(const std::vector<int64_t>& shape, DType dt) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return Both(Rand(static_cast<size_t>(n)), shape, dt);
}

void CudaParityTest::Compare(const Pair& p, DType dt, const std::string& what, double tol) {
  ExpectClose(Get(*gpu_, p.g), Get(*cpu_, p.c), tol > 0 ? tol : TolFor(dt), what);
}

void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << what << ": element " << i << " is " << got[i];
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  const double rms = want.empty() ? 0.0 : std::sqrt(den / static_cast<double>(want.size()));
  const double rel = std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
  EXPECT_LE(rel, tol) << what << ": relative L2 error " << rel;
  int reported = 0;
  for (size_t i = 0; i < got.size() && reported < 5; ++i) {
    const double bound = 10.0 * tol * (std::fabs(want[i]) + rms) + 1e-30;
    if (std::fabs(static_cast<double>(got[i]) - want[i]) > bound) {
      ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << want[i];
      ++reported;
    }
  }
}

}  // namespace tessera::testing_cuda
