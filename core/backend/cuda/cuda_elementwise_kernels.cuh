// Device code of the element-wise kernels (launchers: cuda_elementwise.cu). Kept in a header so
// tests/core/backend_cuda/elementwise_attention_gemm_emulation_test.cc can run these same kernel bodies on
// the host where no GPU is present.
//
// Element-wise kernels: fill, dtype conversion, add, axpy, scale, sum of squares, SwiGLU, AdamW (one
// tensor, or a batch of them in one launch).
//
// Math: Add out = a + b; Axpy y += alpha x; Scale x *= alpha; SumSquares sum x^2 (fp64 accumulation per
// block, one fp64 atomic per block); SwiGLU out = silu(g) * u with silu(g) = g * sigmoid(g), backward
// dg = dout * u * s * (1 + g (1 - s)), du = dout * silu(g); AdamW as documented in backend.h with the bias
// corrections passed in.
// Memory contract: every kernel is a grid-stride loop over n elements of dense buffers; each element is
// read once and written once; outputs may alias inputs element-for-element (out == a is fine).
#pragma once

#include "core/backend/cuda/cuda_device_util.cuh"
#include "core/backend/cuda/cuda_kernels.h"

// An unnamed namespace: the .cu and the host emulation test each get their own copies (see
// cuda_attention_tiled_kernels.cuh).
namespace tessera::cuda_kernels::elementwise {
namespace {

constexpr int kThreads = 256;

__global__ void FillKernel(void* x, int dt, int64_t n, float value, bool is_i32) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    if (is_i32) {
      static_cast<int32_t*>(x)[i] = static_cast<int32_t>(value);
    } else {
      St(x, dt, i, value);
    }
  }
}

__global__ void CopyManyKernel(const CopyDesc* desc) {
  const CopyDesc c = desc[blockIdx.y];
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < c.n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    St(c.dst, c.dtd, i, Ld(c.src, c.dts, i));
  }
}

__global__ void ConvertKernel(const void* src, int dts, void* dst, int dtd, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    St(dst, dtd, i, Ld(src, dts, i));
  }
}

__global__ void AddKernel(const void* a, int dta, const void* b, int dtb, void* out, int dto, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    St(out, dto, i, Ld(a, dta, i) + Ld(b, dtb, i));
  }
}

__global__ void AxpyKernel(float alpha, const void* x, int dtx, void* y, int dty, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    St(y, dty, i, fmaf(alpha, Ld(x, dtx, i), Ld(y, dty, i)));
  }
}

__global__ void ScaleKernel(void* x, int dt, int64_t n, float alpha) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    St(x, dt, i, alpha * Ld(x, dt, i));
  }
}

__global__ void SumSquaresKernel(const void* x, int dt, int64_t n, double* acc) {
  __shared__ double partial[kThreads / 32];
  double s = 0.0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const double v = Ld(x, dt, i);
    s += v * v;
  }
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int w = 0; w < kThreads / 32; ++w) total += partial[w];
    atomicAdd(acc, total);
  }
}

__device__ __forceinline__ float Sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

__global__ void SwiGluForwardKernel(const void* gate, int dtg, const void* up, int dtu, void* out, int dto,
                                    int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float g = Ld(gate, dtg, i);
    St(out, dto, i, g * Sigmoid(g) * Ld(up, dtu, i));
  }
}

__global__ void SwiGluBackwardKernel(const void* gate, int dtg, const void* up, int dtu, const void* dout,
                                     int dtd, void* dgate, int dtdg, void* dup, int dtdu, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float g = Ld(gate, dtg, i), u = Ld(up, dtu, i), d = Ld(dout, dtd, i);
    const float s = Sigmoid(g);
    St(dgate, dtdg, i, d * u * s * (1.0f + g * (1.0f - s)));
    St(dup, dtdu, i, d * g * s);
  }
}

// One AdamW element: updates m[i], v[i] and returns the new parameter value (before any rounding to the
// parameter's dtype). Shared by the single-tensor and the batched kernel so both compute the same bits.
__device__ __forceinline__ float AdamWElement(float p, float g, float* m, float* v, int64_t i, float lr, float b1,
                                              float b2, float eps, float wd, float bc1, float bc2) {
  const float mi = b1 * m[i] + (1.0f - b1) * g;
  const float vi = b2 * v[i] + (1.0f - b2) * g * g;
  m[i] = mi;
  v[i] = vi;
  return p - lr * ((mi / bc1) / (sqrtf(vi / bc2) + eps) + wd * p);
}

__global__ void AdamWKernel(void* param, int dtp, const void* grad, int dtg, float* m, float* v, int64_t n,
                            float lr, float b1, float b2, float eps, float wd, float bc1, float bc2) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    St(param, dtp, i, AdamWElement(Ld(param, dtp, i), Ld(grad, dtg, i), m, v, i, lr, b1, b2, eps, wd, bc1, bc2));
  }
}

// Batched AdamW: blockIdx.y picks the entry (desc[y]); its blocks grid-stride over that entry's elements.
// The narrow copy reads the parameter back after the store, so it receives exactly what Copy would.
__global__ void AdamWManyKernel(const AdamWDesc* desc, float lr, float b1, float b2, float eps, float bc1,
                                float bc2) {
  const AdamWDesc d = desc[blockIdx.y];
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < d.n; i += int64_t{gridDim.x} * blockDim.x) {
    St(d.param, d.dtp, i,
       AdamWElement(Ld(d.param, d.dtp, i), Ld(d.grad, d.dtg, i), d.m, d.v, i, lr, b1, b2, eps, d.wd, bc1, bc2));
    if (d.narrow != nullptr) St(d.narrow, d.dtn, i, Ld(d.param, d.dtp, i));
  }
}

}  // namespace
}  // namespace tessera::cuda_kernels::elementwise
