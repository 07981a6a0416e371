// Small inline vector kernels shared by the CPU backend's ops. The sources are compiled with
// -fopenmp-simd (see sources.cmake), so `omp simd reduction` lets GCC vectorize float reductions
// (summing in several lanes, which is also more accurate than one serial float accumulator) without
// enabling -ffast-math globally. No OpenMP runtime is used; threads come from core/util/parallel.h.
#pragma once

#include <cstdint>

#include "core/tensor/tensor.h"

namespace tessera::cpu {

inline float Dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline float SumSq(const float* __restrict a, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * a[i];
  return s;
}

inline float MaxOf(const float* __restrict a, int64_t n) {
  float m = -__builtin_inff();
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) m = a[i] > m ? a[i] : m;
  return m;
}

// y += alpha * x
inline void AxpyRow(float alpha, const float* __restrict x, float* __restrict y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// bf16 -> f32 is exact (the bf16 bits are the f32's high half), so these equal Dot / AxpyRow on a widened
// copy of b / x, up to the order GCC sums the lanes in.
inline float DotBf16(const float* __restrict a, const uint16_t* __restrict b, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * Bf16ToF32(b[i]);
  return s;
}

inline void AxpyRowBf16(float alpha, const uint16_t* __restrict x, float* __restrict y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * Bf16ToF32(x[i]);
}

// Rows-per-chunk for ParallelFor so that each chunk does roughly `target` elements of work.
inline int64_t GrainFor(int64_t work_per_item, int64_t target = 32768) {
  if (work_per_item <= 0) return target;
  const int64_t g = target / work_per_item;
  return g < 1 ? 1 : g;
}

}  // namespace tessera::cpu
