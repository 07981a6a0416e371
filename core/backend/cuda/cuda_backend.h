// CUDA-specific controls of the CUDA backend that the generic Backend interface does not carry.
// Available only in builds with TESSERA_HAVE_CUDA (tessera_backend defines it publicly).
#pragma once

#include "absl/status/status.h"
#include "core/backend/backend.h"

namespace tessera {

// How GroupedMatmul* run their groups in one launch. All are kept until they are measured on a GPU
// (ops/bench/bench_gpu_grouped_gemm); the default comes from env TESSERA_GROUPED_GEMM ("cublas", "kernel"
// or "chunks"), else kCublas. All follow CheckMatmulDtypes (A and B share a dtype; C is f32 or theirs);
// weight gradients in f32 from bf16 operands, which cuBLAS's grouped API refuses, run one cublasGemmEx
// per group.
//  - kCublas: cublasGemmGroupedBatchedEx, problems of equal shape in one group.
//  - kKernel: our WMMA grouped kernel (cuda_grouped_gemm.cu).
//  - kCublasChunks: forward and input-grad problems cut into full chunks of kGroupedChunkRows rows, all of
//    one shape, in one cublasGemmBatchedEx, and the remainders through kCublas (weight gradients, whose rows
//    are the reduction, go through kCublas whole). Written after the grouped API measured 0.34-0.40 of a
//    dense GEMM on an H100, in case the classic batched API runs equal shapes faster
//    (ops/bench/bench_gpu_batched_gemm asks exactly that); not yet run on a GPU.
enum class GroupedGemmImpl { kCublas, kKernel, kCublasChunks };
inline constexpr int64_t kGroupedChunkRows = 256;
// "cublas", "kernel" or "chunks" (the TESSERA_GROUPED_GEMM spelling).
inline const char* GroupedGemmImplName(GroupedGemmImpl impl) {
  switch (impl) {
    case GroupedGemmImpl::kCublas: return "cublas";
    case GroupedGemmImpl::kKernel: return "kernel";
    case GroupedGemmImpl::kCublasChunks: return "chunks";
  }
  return "?";
}

// INVALID_ARGUMENT when `backend` is not a CUDA backend.
absl::Status SetCudaGroupedGemmImpl(Backend& backend, GroupedGemmImpl impl);

// Index tensors (gather/scatter/embedding ids, router top-k indices, cross-entropy targets) are range-
// checked before each op by default, so a bad index is INVALID_ARGUMENT from that op, as on the CPU;
// that costs a stream synchronization per such op. With checks off (or env
// TESSERA_CUDA_EAGER_INDEX_CHECKS=0) ops stay asynchronous, kernels skip bad rows and the next
// Synchronize/CopyToHost/SumSquares reports INVALID_ARGUMENT naming the op instead.
absl::Status SetCudaEagerIndexChecks(Backend& backend, bool on);

// f32 GEMMs (dense and grouped) run on TF32 tensor cores (10-bit mantissa inputs, fp32 accumulation)
// instead of exact fp32 FMA: about 8x the throughput on Hopper, at bf16-like input rounding. Off by
// default so f32 results match the CPU reference; env TESSERA_CUDA_TF32=1 turns it on at creation.
// bf16/f16 GEMMs are unaffected (they always use tensor cores).
absl::Status SetCudaAllowTf32(Backend& backend, bool on);

// Which kernels run AttentionForward/Backward where both could: kTiled (the default), the tensor-core
// FlashAttention-style kernels of cuda_attention_tiled.cu, serve bf16 q/k/v (and bf16 dout) with head_dim
// 64 or 128 when some sequence brings at least kTiledAttentionMinQueries queries (prefill, training);
// kRowwise, one block per (query row, head), serves every other call (f32, decode steps, other head dims)
// and, when selected, all of them. Env TESSERA_CUDA_ATTENTION ("tiled" or "rowwise") at creation. A device
// that cannot give a block the tiled kernels' ~123 KB of shared memory (pre-Hopper) always runs row-wise.
enum class AttentionImpl { kRowwise, kTiled };
inline constexpr int64_t kTiledAttentionMinQueries = 16;
absl::Status SetCudaAttentionImpl(Backend& backend, AttentionImpl impl);

}  // namespace tessera
