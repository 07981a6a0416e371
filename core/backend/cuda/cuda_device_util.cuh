// Device-side helpers shared by the backend's .cu files: dtype-generic loads/stores (every kernel does
// its arithmetic in fp32 and converts at the memory boundary), atomics, and warp/block reductions.
//
// The dtype is a runtime argument that is uniform across a launch, so the switch below is a uniform
// branch (no divergence); it keeps the number of template instantiations, and nvcc time, small.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "core/tensor/tensor.h"

// A kernel's dynamic shared memory (the launch's third <<<>>> argument) as `unsigned char name[]`. The
// host emulation of kernels (tests/core/backend_cuda/emulation) defines this first, as its block's buffer.
#ifndef TESSERA_DYNAMIC_SHARED
#define TESSERA_DYNAMIC_SHARED(name) extern __shared__ __align__(128) unsigned char name[]
#endif

namespace tessera::cuda_kernels {

inline constexpr int kF32 = static_cast<int>(DType::kF32);
inline constexpr int kBF16 = static_cast<int>(DType::kBF16);
inline constexpr int kF16 = static_cast<int>(DType::kF16);

__device__ __forceinline__ float Ld(const void* p, int dt, int64_t i) {
  if (dt == kBF16) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  if (dt == kF16) return __half2float(static_cast<const __half*>(p)[i]);
  return static_cast<const float*>(p)[i];
}

__device__ __forceinline__ void St(void* p, int dt, int64_t i, float v) {
  if (dt == kBF16) {
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  } else if (dt == kF16) {
    static_cast<__half*>(p)[i] = __float2half_rn(v);
  } else {
    static_cast<float*>(p)[i] = v;
  }
}

// p[i] += v, atomically (bf16/f16 atomics are native on sm_80+).
__device__ __forceinline__ void AtomicAddTo(void* p, int dt, int64_t i, float v) {
  if (dt == kBF16) {
    atomicAdd(static_cast<__nv_bfloat16*>(p) + i, __float2bfloat16_rn(v));
  } else if (dt == kF16) {
    atomicAdd(static_cast<__half*>(p) + i, __float2half_rn(v));
  } else {
    atomicAdd(static_cast<float*>(p) + i, v);
  }
}

__device__ __forceinline__ float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum; every thread gets the result. blockDim.x must be a multiple of 32 and at most 1024.
// `scratch` holds at least 32 floats of shared memory; the call ends with a barrier so it can be reused.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = WarpSum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = lane < warps ? scratch[lane] : 0.0f;
  r = WarpSum(r);
  __syncthreads();
  return r;
}

__device__ __forceinline__ float BlockMax(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = WarpMax(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = lane < warps ? scratch[lane] : -INFINITY;
  r = WarpMax(r);
  __syncthreads();
  return r;
}

// Grid size for a grid-stride loop over n elements.
inline unsigned GridFor(int64_t n, int threads) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > 65535LL * 16) blocks = 65535LL * 16;
  return static_cast<unsigned>(blocks);
}

}  // namespace tessera::cuda_kernels
