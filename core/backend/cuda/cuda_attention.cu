// Launchers of the row-wise attention kernels (cuda_attention_kernels.cuh has the math, the kernel shape
// and the memory contract).
#include "core/backend/cuda/cuda_attention_kernels.cuh"

namespace tessera::cuda_kernels {
namespace {

using attention::AttentionBackwardKernel;
using attention::AttentionForwardKernel;
using attention::kWarps;

}  // namespace

cudaError_t AttentionForward(const void* q, int dtq, const AttnSeqDesc* seqs, const int32_t* row_seq, int dtkv,
                             int64_t nq, int heads, int kv_heads, int head_dim, float scale, void* out, int dto,
                             float* lse, cudaStream_t stream) {
  if (nq == 0 || heads == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(nq), static_cast<unsigned>(heads));
  AttentionForwardKernel<<<grid, kWarps * 32, 0, stream>>>(q, dtq, seqs, row_seq, dtkv, heads, kv_heads, head_dim,
                                                         scale, out, dto, lse);
  return cudaGetLastError();
}

cudaError_t AttentionBackward(const void* q, int dtq, const AttnSeqDesc* seqs, const int32_t* row_seq, int dtkv,
                              int dtdkv, int64_t nq, int heads, int kv_heads, int head_dim, float scale,
                              const void* out, int dto, const float* lse, const void* dout, int dtdo, void* dq,
                              int dtdq, cudaStream_t stream) {
  if (nq == 0 || heads == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(nq), static_cast<unsigned>(heads));
  AttentionBackwardKernel<<<grid, kWarps * 32, 0, stream>>>(q, dtq, seqs, row_seq, dtkv, dtdkv, heads, kv_heads,
                                                          head_dim, scale, out, dto, lse, dout, dtdo, dq, dtdq);
  return cudaGetLastError();
}

}  // namespace tessera::cuda_kernels
