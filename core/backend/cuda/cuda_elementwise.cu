// Launchers of the element-wise kernels (cuda_elementwise_kernels.cuh has the math and the memory
// contract).
#include <algorithm>

#include "core/backend/cuda/cuda_elementwise_kernels.cuh"

namespace tessera::cuda_kernels {
namespace {

using elementwise::AdamWKernel;
using elementwise::AdamWManyKernel;
using elementwise::AddKernel;
using elementwise::AxpyKernel;
using elementwise::ConvertKernel;
using elementwise::CopyManyKernel;
using elementwise::FillKernel;
using elementwise::kThreads;
using elementwise::ScaleKernel;
using elementwise::SumSquaresKernel;
using elementwise::SwiGluBackwardKernel;
using elementwise::SwiGluForwardKernel;

}  // namespace

cudaError_t Fill(void* x, int dt, int64_t n, float value, bool is_i32, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  FillKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(x, dt, n, value, is_i32);
  return cudaGetLastError();
}

cudaError_t CopyMany(const CopyDesc* desc_dev, int count, int64_t max_n, cudaStream_t stream) {
  if (count == 0 || max_n == 0) return cudaSuccess;
  if (count > 65535) return cudaErrorInvalidValue;  // gridDim.y; the caller splits larger batches
  unsigned x = GridFor(max_n, kThreads);
  if (x > 64) x = 64;
  CopyManyKernel<<<dim3(x, static_cast<unsigned>(count)), kThreads, 0, stream>>>(desc_dev);
  return cudaGetLastError();
}

cudaError_t Convert(const void* src, int dts, void* dst, int dtd, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  ConvertKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(src, dts, dst, dtd, n);
  return cudaGetLastError();
}

cudaError_t Add(const void* a, int dta, const void* b, int dtb, void* out, int dto, int64_t n,
                cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  AddKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(a, dta, b, dtb, out, dto, n);
  return cudaGetLastError();
}

cudaError_t Axpy(float alpha, const void* x, int dtx, void* y, int dty, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  AxpyKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(alpha, x, dtx, y, dty, n);
  return cudaGetLastError();
}

cudaError_t Scale(void* x, int dt, int64_t n, float alpha, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  ScaleKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(x, dt, n, alpha);
  return cudaGetLastError();
}

cudaError_t SumSquares(const void* x, int dt, int64_t n, double* acc, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  // Few blocks: each adds one fp64 atomic.
  unsigned blocks = GridFor(n, kThreads);
  if (blocks > 1024) blocks = 1024;
  SumSquaresKernel<<<blocks, kThreads, 0, stream>>>(x, dt, n, acc);
  return cudaGetLastError();
}

cudaError_t SwiGluForward(const void* gate, int dtg, const void* up, int dtu, void* out, int dto, int64_t n,
                          cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  SwiGluForwardKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(gate, dtg, up, dtu, out, dto, n);
  return cudaGetLastError();
}

cudaError_t SwiGluBackward(const void* gate, int dtg, const void* up, int dtu, const void* dout, int dtd,
                           void* dgate, int dtdg, void* dup, int dtdu, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  SwiGluBackwardKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(gate, dtg, up, dtu, dout, dtd, dgate,
                                                                     dtdg, dup, dtdu, n);
  return cudaGetLastError();
}

cudaError_t AdamW(void* param, int dtp, const void* grad, int dtg, float* m, float* v, int64_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, float bc1, float bc2,
                  cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  AdamWKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(param, dtp, grad, dtg, m, v, n, lr, beta1, beta2,
                                                            eps, weight_decay, bc1, bc2);
  return cudaGetLastError();
}

cudaError_t AdamWMany(const AdamWDesc* desc_dev, int count, int64_t max_n, float lr, float beta1, float beta2,
                      float eps, float bc1, float bc2, cudaStream_t stream) {
  if (count == 0 || max_n == 0) return cudaSuccess;
  if (count > 65535) return cudaErrorInvalidValue;  // gridDim.y; the caller splits larger batches
  // About 4096 blocks in all (enough to fill the device), never more than the largest entry can use.
  const unsigned per_entry = static_cast<unsigned>(std::max(1, 4096 / count));
  const unsigned x = std::min(GridFor(max_n, kThreads), per_entry);
  AdamWManyKernel<<<dim3(x, static_cast<unsigned>(count)), kThreads, 0, stream>>>(desc_dev, lr, beta1, beta2, eps,
                                                                                  bc1, bc2);
  return cudaGetLastError();
}

}  // namespace tessera::cuda_kernels
