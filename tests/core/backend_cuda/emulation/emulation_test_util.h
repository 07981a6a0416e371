// Host-data helpers shared by the kernel emulation tests (tests/core/backend_cuda/*_emulation_test.cc).
#pragma once

#include <cstddef>
#include <random>
#include <vector>

#include <cuda_bf16.h>

#include "core/backend/backend.h"
#include "gtest/gtest.h"

namespace cuda_emulation {

// n values uniform in [lo, hi), each exactly representable in bf16 (so f32 and bf16 copies hold the same
// numbers and the CPU reference sees exactly what the kernel sees).
inline std::vector<float> RandomBf16Exact(size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = __bfloat162float(__float2bfloat16_rn(d(rng)));
  return v;
}

inline std::vector<__nv_bfloat16> ToBf16(const std::vector<float>& v) {
  std::vector<__nv_bfloat16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __float2bfloat16_rn(v[i]);
  return out;
}

// A tensor's elements as T (T's size must match the tensor's dtype).
template <typename T>
std::vector<T> CopyToHost(tessera::Backend& be, const tessera::Tensor& t) {
  std::vector<T> v(t.numel());
  EXPECT_TRUE(be.CopyToHost(t, v.data(), v.size() * sizeof(T)).ok());
  return v;
}

}  // namespace cuda_emulation
