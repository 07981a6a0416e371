// Test utilities for backend op tests: every op test is a value-parameterized gtest over the
// available backends ("cpu" always, "cuda" when MakeCudaBackend(0) succeeds; otherwise one line
// "CUDA backend unavailable: <reason>; GPU op tests skipped" is printed once).
//
// References are plain loops in double; finite-difference gradients are central differences of those
// double references (h = 1e-6 relative), so the only float error in a comparison is the backend's.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "gtest/gtest.h"

namespace tessera::testing {

// Names of the backends to test: "cpu", plus "cuda" when one is usable.
std::vector<std::string> AvailableBackends();
std::unique_ptr<Backend> CreateBackendOrDie(const std::string& name);

class BackendTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { backend_ = CreateBackendOrDie(GetParam()); }
  Backend& be() { return *backend_; }

  Tensor Up(const std::vector<float>& v, std::vector<int64_t> shape);
  Tensor UpI(const std::vector<int32_t>& v, std::vector<int64_t> shape);
  Tensor Up(const std::vector<double>& v, std::vector<int64_t> shape);  // rounded to f32
  std::vector<float> Down(const Tensor& t);
  std::vector<int32_t> DownI(const Tensor& t);
  // A tensor filled with NaN, so tests catch outputs that are not written.
  Tensor Garbage(std::vector<int64_t> shape);

  std::unique_ptr<Backend> backend_;
};

std::string BackendName(const ::testing::TestParamInfo<std::string>& info);

#define TESSERA_INSTANTIATE_BACKEND_TEST(Suite)                                                      \
  INSTANTIATE_TEST_SUITE_P(Backends, Suite, ::testing::ValuesIn(::tessera::testing::AvailableBackends()), \
                           ::tessera::testing::BackendName)

// Uniform random values in [lo, hi), deterministic for a seed.
std::vector<double> RandomValues(size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0);
std::vector<int32_t> RandomInts(size_t n, uint64_t seed, int32_t lo, int32_t hi);  // [lo, hi)
// Values as float then back to double: references must see exactly what the backend sees.
std::vector<double> RoundToF32(const std::vector<double>& v);
std::vector<float> ToF32(const std::vector<double>& v);

// Asserts |got - want| <= atol + rtol * |want| elementwise; reports the first few failures.
void ExpectClose(const std::vector<float>& got, const std::vector<double>& want, double atol, double rtol,
                 const std::string& what);

// Central-difference gradient of f (a scalar function in double) at x.
std::vector<double> NumericalGrad(const std::function<double(const std::vector<double>&)>& f,
                                  std::vector<double> x, double h = 1e-6);
// sum(a .* b)
double DotD(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace tessera::testing
