#include "tests/core/backend/backend_test_util.h"

#include <cstdio>
#include <limits>

namespace tessera::testing {

std::vector<std::string> AvailableBackends() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v = {"cpu"};
    absl::StatusOr<std::unique_ptr<Backend>> cuda = MakeCudaBackend(0);
    if (cuda.ok() && *cuda != nullptr) {
      v.push_back("cuda");
    } else {
      std::printf("CUDA backend unavailable: %s; GPU op tests skipped\n",
                  cuda.ok() ? "factory returned null" : std::string(cuda.status().message()).c_str());
    }
    return v;
  }();
  return names;
}

std::unique_ptr<Backend> CreateBackendOrDie(const std::string& name) {
  absl::StatusOr<std::unique_ptr<Backend>> b = MakeBackend(name);
  if (!b.ok() || *b == nullptr) {
    ADD_FAILURE() << "cannot create backend " << name << ": " << (b.ok() ? "null" : b.status().ToString());
    std::abort();
  }
  return std::move(*b);
}

std::string BackendName(const ::testing::TestParamInfo<std::string>& info) { return info.param; }

Tensor BackendTest::Up(const std::vector<float>& v, std::vector<int64_t> shape) {
  absl::StatusOr<Tensor> t = be().FromHost(v, std::move(shape));
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : Tensor();
}

Tensor BackendTest::Up(const std::vector<double>& v, std::vector<int64_t> shape) {
  return Up(ToF32(v), std::move(shape));
}

Tensor BackendTest::UpI(const std::vector<int32_t>& v, std::vector<int64_t> shape) {
  absl::StatusOr<Tensor> t = be().FromHost(v, std::move(shape));
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : Tensor();
}

std::vector<float> BackendTest::Down(const Tensor& t) {
  absl::StatusOr<std::vector<float>> v = be().ToHostF32(t);
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *v : std::vector<float>();
}

std::vector<int32_t> BackendTest::DownI(const Tensor& t) {
  absl::StatusOr<std::vector<int32_t>> v = be().ToHostI32(t);
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *v : std::vector<int32_t>();
}

Tensor BackendTest::Garbage(std::vector<int64_t> shape) {
  absl::StatusOr<Tensor> t = be().Alloc(std::move(shape), DType::kF32);
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok()) return Tensor();
  EXPECT_TRUE(be().Fill(*t, std::numeric_limits<float>::quiet_NaN()).ok());
  return *t;
}

std::vector<double> RandomValues(size_t n, uint64_t seed, double lo, double hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(n);
  for (double& x : v) x = static_cast<double>(static_cast<float>(dist(rng)));
  return v;
}

std::vector<int32_t> RandomInts(size_t n, uint64_t seed, int32_t lo, int32_t hi) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(lo, hi - 1);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(rng);
  return v;
}

std::vector<double> RoundToF32(const std::vector<double>& v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(v[i]);
  return out;
}

std::vector<float> ToF32(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

void ExpectClose(const std::vector<float>& got, const std::vector<double>& want, double atol, double rtol,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int failures = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    const double tol = atol + rtol * std::fabs(want[i]);
    if (!(err <= tol)) {  // NaN fails too
      if (++failures <= 5) {
        ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << want[i]
                      << " (err " << err << " > tol " << tol << ")";
      }
    }
  }
  if (failures > 5) ADD_FAILURE() << what << ": " << failures << " elements out of tolerance in total";
}

std::vector<double> NumericalGrad(const std::function<double(const std::vector<double>&)>& f,
                                  std::vector<double> x, double h) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    const double step = h * std::max(1.0, std::fabs(x0));
    x[i] = x0 + step;
    const double fp = f(x);
    x[i] = x0 - step;
    const double fm = f(x);
    x[i] = x0;
    g[i] = (fp - fm) / (2.0 * step);
  }
  return g;
}

double DotD(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace tessera::testing
