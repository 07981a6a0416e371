// Launchers of the row-normalizing kernels (cuda_norm_vocab_kernels.cuh has the math and the memory
// contract): RMSNorm (forward/backward), RoPE, log-softmax and cross-entropy.
#include "core/backend/cuda/cuda_norm_vocab_kernels.cuh"

namespace tessera::cuda_kernels {
namespace {

using norm_vocab::CrossEntropyBackwardKernel;
using norm_vocab::CrossEntropyForwardKernel;
using norm_vocab::kDwRowsPerChunk;
using norm_vocab::LogSoftmaxKernel;
using norm_vocab::RmsNormBackwardDwKernel;
using norm_vocab::RmsNormBackwardDxKernel;
using norm_vocab::RmsNormForwardKernel;
using norm_vocab::RopeKernel;

int RowThreads(int64_t d) { return d >= 1024 ? 512 : (d >= 256 ? 256 : (d >= 128 ? 128 : (d >= 64 ? 64 : 32))); }

unsigned RowBlocks(int64_t rows) {
  return static_cast<unsigned>(rows < 1 ? 1 : (rows > (1LL << 31) - 1 ? (1LL << 31) - 1 : rows));
}

}  // namespace

cudaError_t RmsNormForward(const void* x, int dtx, const void* w, int dtw, float eps, void* out, int dto,
                           float* rstd, int64_t n, int64_t d, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  RmsNormForwardKernel<<<RowBlocks(n), RowThreads(d), 0, stream>>>(x, dtx, w, dtw, eps, out, dto, rstd, n, d);
  return cudaGetLastError();
}

cudaError_t RmsNormBackward(const void* x, int dtx, const void* w, int dtw, const float* rstd, const void* dout,
                            int dtdo, void* dx, int dtdx, void* dw, int dtdw, int64_t n, int64_t d,
                            cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  RmsNormBackwardDxKernel<<<RowBlocks(n), RowThreads(d), 0, stream>>>(x, dtx, w, dtw, rstd, dout, dtdo, dx, dtdx,
                                                                    n, d);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess || dw == nullptr) return e;
  const int64_t chunks = (n + kDwRowsPerChunk - 1) / kDwRowsPerChunk;
  const dim3 grid(static_cast<unsigned>((d + 255) / 256), static_cast<unsigned>(chunks > 65535 ? 65535 : chunks));
  RmsNormBackwardDwKernel<<<grid, 256, 0, stream>>>(x, dtx, rstd, dout, dtdo, dw, dtdw, n, d);
  return cudaGetLastError();
}

cudaError_t Rope(void* x, int dt, const int32_t* pos, int64_t n, int64_t heads, int64_t head_dim, float theta,
                 bool inverse, cudaStream_t stream) {
  const int64_t total = n * heads * (head_dim / 2);
  if (total == 0) return cudaSuccess;
  RopeKernel<<<GridFor(total, 256), 256, 0, stream>>>(x, dt, pos, n, heads, head_dim, theta, inverse);
  return cudaGetLastError();
}

cudaError_t LogSoftmax(const void* logits, int dtl, void* out, int dto, int64_t n, int64_t v, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  LogSoftmaxKernel<<<RowBlocks(n), RowThreads(v), 0, stream>>>(logits, dtl, out, dto, n, v);
  return cudaGetLastError();
}

cudaError_t CrossEntropyForward(const void* logits, int dtl, const int32_t* targets, void* loss, int dtloss,
                                float* lse, int64_t n, int64_t v, int* err, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  CrossEntropyForwardKernel<<<RowBlocks(n), RowThreads(v), 0, stream>>>(logits, dtl, targets, loss, dtloss, lse,
                                                                      n, v, err);
  return cudaGetLastError();
}

cudaError_t CrossEntropyBackward(const void* logits, int dtl, const int32_t* targets, const float* lse,
                                 const void* dloss, int dtdl, void* dlogits, int dtd, int64_t n, int64_t v,
                                 cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  CrossEntropyBackwardKernel<<<RowBlocks(n), RowThreads(v), 0, stream>>>(logits, dtl, targets, lse, dloss, dtdl,
                                                                       dlogits, dtd, n, v);
  return cudaGetLastError();
}

}  // namespace tessera::cuda_kernels
