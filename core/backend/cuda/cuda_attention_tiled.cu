// Launchers of the tiled attention kernels (cuda_attention_tiled_kernels.cuh has the math, the schedule
// and the memory contract).
#include <algorithm>

#include "core/backend/cuda/cuda_attention_tiled_kernels.cuh"

namespace tessera::cuda_kernels {
namespace {

using tiled_attention::bf16;
using tiled_attention::kThreads;
using tiled_attention::Layout;
using tiled_attention::RowDotsKernel;
using tiled_attention::TiledBackwardKvKernel;
using tiled_attention::TiledBackwardQKernel;
using tiled_attention::TiledForwardKernel;

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

template <int D>
cudaError_t LaunchForward(const void* q, const AttnSeqDesc* seqs, const AttnTile* q_tiles, int64_t num_q_tiles,
                          int heads, int kv_heads, float scale, void* out, int dto, float* lse, cudaStream_t stream) {
  return LaunchTiled(TiledForwardKernel<D>, Layout<D>::kForwardBytes, num_q_tiles, heads, stream,
                     static_cast<const bf16*>(q), seqs, q_tiles, heads, kv_heads, scale, out, dto, lse);
}

// dk/dv first (key tiles), then dq (query tiles).
template <int D>
cudaError_t LaunchBackward(const void* q, const AttnSeqDesc* seqs, const AttnTile* q_tiles, int64_t num_q_tiles,
                           const AttnTile* k_tiles, int64_t num_k_tiles, int heads, int kv_heads, float scale,
                           const float* lse, const float* dvec, const void* dout, int dtdkv, void* dq, int dtdq,
                           cudaStream_t stream) {
  const bf16* qb = static_cast<const bf16*>(q);
  const bf16* dob = static_cast<const bf16*>(dout);
  const cudaError_t e = LaunchTiled(TiledBackwardKvKernel<D>, Layout<D>::kKvBytes, num_k_tiles, kv_heads, stream, qb,
                                    seqs, k_tiles, heads, kv_heads, scale, lse, dvec, dob, dtdkv);
  if (e != cudaSuccess) return e;
  return LaunchTiled(TiledBackwardQKernel<D>, Layout<D>::kDqBytes, num_q_tiles, heads, stream, qb, seqs, q_tiles,
                     heads, kv_heads, scale, lse, dvec, dob, dq, dtdq);
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
  switch (head_dim) {
    case 64: return LaunchForward<64>(q, seqs, q_tiles, num_q_tiles, heads, kv_heads, scale, out, dto, lse, stream);
    case 128: return LaunchForward<128>(q, seqs, q_tiles, num_q_tiles, heads, kv_heads, scale, out, dto, lse, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t TiledAttentionBackward(const void* q, const AttnSeqDesc* seqs, const AttnTile* q_tiles,
                                   int64_t num_q_tiles, const AttnTile* k_tiles, int64_t num_k_tiles, int heads,
                                   int kv_heads, int head_dim, float scale, const float* lse, const float* dvec,
                                   const void* dout, int dtdkv, void* dq, int dtdq, cudaStream_t stream) {
  switch (head_dim) {
    case 64:
      return LaunchBackward<64>(q, seqs, q_tiles, num_q_tiles, k_tiles, num_k_tiles, heads, kv_heads, scale, lse,
                                dvec, dout, dtdkv, dq, dtdq, stream);
    case 128:
      return LaunchBackward<128>(q, seqs, q_tiles, num_q_tiles, k_tiles, num_k_tiles, heads, kv_heads, scale, lse,
                                 dvec, dout, dtdkv, dq, dtdq, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t AttentionRowDots(const void* out, int dto, const void* dout, int dtdo, const int32_t* row_seq, int64_t nq,
                             int heads, int head_dim, float* d, cudaStream_t stream) {
  const int64_t warps = nq * heads;
  if (warps == 0) return cudaSuccess;
  constexpr int kRowThreads = 256;
  RowDotsKernel<<<GridFor(warps * 32, kRowThreads), kRowThreads, 0, stream>>>(out, dto, dout, dtdo, row_seq, nq,
                                                                               heads, head_dim, d);
  return cudaGetLastError();
}

}  // namespace tessera::cuda_kernels
