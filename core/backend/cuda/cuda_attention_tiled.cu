// Launchers of the tiled attention kernels (cuda_attention_tiled_kernels.cuh has the math, the schedule
// and the memory contract).
#include <algorithm>

#include "core/backend/cuda/cuda_attention_tiled_kernels.cuh"

namespace tessera::cuda_kernels {
namespace {

using tiled_attention::bf16;
using tiled_attention::kThreads;
using tiled_attention::Layout;
using tiled_attention::TiledBackwardKvKernel;
using tiled_attention::TiledBackwardQKernel;
using tiled_attention::TiledForwardKernel;

// d[i, h] = dout[i, h, :] . out[i, h, :] for rows in a sequence, 0 elsewhere; one warp per (row, head).
__global__ void RowDotsKernel(const void* out, int dto, const void* dout, int dtdo, const int32_t* row_seq,
                              int64_t nq, int heads, int head_dim, float* d) {
  const int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (w >= nq * heads) return;
  const int64_t i = w / heads;
  float s = 0.0f;
  if (row_seq[i] >= 0) {
    for (int c = lane; c < head_dim; c += 32) s = fmaf(Ld(out, dto, w * head_dim + c), Ld(dout, dtdo, w * head_dim + c), s);
  }
  s = WarpSum(s);
  if (lane == 0) d[w] = s;
}

template <typename Kernel, typename... Args>
cudaError_t LaunchTiled(Kernel kernel, int smem_bytes, int64_t num_tiles, int heads_dim, cudaStream_t stream,
                        Args... args) {
  if (num_tiles == 0) return cudaSuccess;
  if (num_tiles > (1LL << 31) - 1 || heads_dim > 65535) return cudaErrorInvalidConfiguration;
  // Above 48 KB of dynamic shared memory a kernel must opt in (per device, so on every launch: cheap).
  if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
      e != cudaSuccess) {
    return e;
  }
  kernel<<<dim3(static_cast<unsigned>(num_tiles), static_cast<unsigned>(heads_dim)), kThreads, smem_bytes, stream>>>(
      args...);
  return cudaGetLastError();
}

}  // namespace

bool TiledAttentionSupports(int head_dim) { return head_dim == 64 || head_dim == 128; }

int TiledAttentionSharedBytes() {
  using L = Layout<128>;
  return std::max({L::kForwardBytes, L::kKvBytes, L::kDqBytes});
}

cudaError_t TiledAttentionForward(const void* q, const AttnSeqDesc* seqs, const AttnTile* q_tiles, int64_t num_q_tiles,
                                  int heads, int kv_heads, int head_dim, float scale, void* out, int dto, float* lse,
                                  cudaStream_t stream) {
  const bf16* qb = static_cast<const bf16*>(q);
  if (head_dim == 64) {
    return LaunchTiled(TiledForwardKernel<64>, Layout<64>::kForwardBytes, num_q_tiles, heads, stream, qb, seqs, q_tiles,
                       heads, kv_heads, scale, out, dto, lse);
  }
  if (head_dim == 128) {
    return LaunchTiled(TiledForwardKernel<128>, Layout<128>::kForwardBytes, num_q_tiles, heads, stream, qb, seqs,
                       q_tiles, heads, kv_heads, scale, out, dto, lse);
  }
  return cudaErrorInvalidValue;
}

cudaError_t TiledAttentionBackward(const void* q, const AttnSeqDesc* seqs, const AttnTile* q_tiles,
                                   int64_t num_q_tiles, const AttnTile* k_tiles, int64_t num_k_tiles, int heads,
                                   int kv_heads, int head_dim, float scale, const float* lse, const float* dvec,
                                   const void* dout, int dtdkv, void* dq, int dtdq, cudaStream_t stream) {
  const bf16* qb = static_cast<const bf16*>(q);
  const bf16* dob = static_cast<const bf16*>(dout);
  cudaError_t e = cudaErrorInvalidValue;
  if (head_dim == 64) {
    e = LaunchTiled(TiledBackwardKvKernel<64>, Layout<64>::kKvBytes, num_k_tiles, kv_heads, stream, qb, seqs, k_tiles,
                    heads, kv_heads, scale, lse, dvec, dob, dtdkv);
    if (e == cudaSuccess) {
      e = LaunchTiled(TiledBackwardQKernel<64>, Layout<64>::kDqBytes, num_q_tiles, heads, stream, qb, seqs, q_tiles,
                      heads, kv_heads, scale, lse, dvec, dob, dq, dtdq);
    }
  } else if (head_dim == 128) {
    e = LaunchTiled(TiledBackwardKvKernel<128>, Layout<128>::kKvBytes, num_k_tiles, kv_heads, stream, qb, seqs, k_tiles,
                    heads, kv_heads, scale, lse, dvec, dob, dtdkv);
    if (e == cudaSuccess) {
      e = LaunchTiled(TiledBackwardQKernel<128>, Layout<128>::kDqBytes, num_q_tiles, heads, stream, qb, seqs, q_tiles,
                      heads, kv_heads, scale, lse, dvec, dob, dq, dtdq);
    }
  }
  return e;
}

cudaError_t AttentionRowDots(const void* out, int dto, const void* dout, int dtdo, const int32_t* row_seq, int64_t nq,
                             int heads, int head_dim, float* d, cudaStream_t stream) {
  const int64_t warps = nq * heads;
  if (warps == 0) return cudaSuccess;
  constexpr int kRowThreads = 256;
  const int64_t blocks = (warps * 32 + kRowThreads - 1) / kRowThreads;
  if (blocks > (1LL << 31) - 1) return cudaErrorInvalidConfiguration;
  RowDotsKernel<<<static_cast<unsigned>(blocks), kRowThreads, 0, stream>>>(out, dto, dout, dtdo, row_seq, nq, heads,
                                                                            head_dim, d);
  return cudaGetLastError();
}

}  // namespace tessera::cuda_kernels
