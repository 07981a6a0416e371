// Shared fixture for the CUDA parity tests: a CPU and a CUDA backend (tests skip when either is missing),
// random host data, uploads in a chosen dtype, and a norm-relative comparison.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "gtest/gtest.h"

namespace tessera::testing_cuda {

// f32: matches the CPU up to summation order; bf16 storage: one bf16 rounding (2^-8) per stored value.
inline double TolFor(DType dt) { return dt == DType::kF32 ? 1e-4 : 2e-2; }

// Rounds each value through `dt` (identity for f32), so both backends see identical inputs.
std::vector<float> RoundTo(const std::vector<float>& v, DType dt);

class CudaParityTest : public ::testing::Test {
 protected:
  void SetUp() override;

  std::vector<float> Rand(size_t n, float lo = -1.0f, float hi = 1.0f);
  std::vector<int32_t> RandInt(size_t n, int32_t lo, int32_t hi);  // inclusive
  // Uploads `v` (rounded to dt) to backend `b` as a dt tensor.
  Tensor Make(Backend& b, const std::vector<float>& v, std::vector<int64_t> shape, DType dt = DType::kF32);
  Tensor MakeI(Backend& b, const std::vector<int32_t>& v, std::vector<int64_t> shape);
  std::vector<float> Get(Backend& b, const Tensor& t);
  // The same values on both backends: f32 on the CPU (rounded through dt), dt on the GPU.
  struct Pair {
    Tensor c, g;
  };
  Pair Both(const std::vector<float>& v, const std::vector<int64_t>& shape, DType dt = DType::kF32);
  Pair BothI(const std::vector<int32_t>& v, const std::vector<int64_t>& shape);
  // Uninitialized-on-purpose outputs are avoided: every output starts as the same random values on both.
  Pair BothRand(const std::vector<int64_t>& shape, DType dt = DType::kF32);
  // Checks the GPU tensor against the CPU one with TolFor(dt) (or `tol` when > 0).
  void Compare(const Pair& p, DType dt, const std::string& what, double tol = 0);
  std::vector<int32_t> GetI(Backend& b, const Tensor& t);

  std::unique_ptr<Backend> cpu_;
  std::unique_ptr<Backend> gpu_;
  std::mt19937 rng_{12345};
};

// Fails (with `what`) when got has NaN/Inf, a different size, or ||got - want|| / ||want|| > tol, or some
// element differs by more than 10 * tol * (|want_i| + rms(want)).
void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what);

}  // namespace tessera::testing_cuda
