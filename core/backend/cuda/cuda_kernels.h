// Launchers for the CUDA backend's kernels, with plain C++ types only, so that the .cu files never parse
// Abseil and the host-side validation (cuda_*.cc, compiled by the C++ compiler) never parses device code.
//
// Contract shared by every launcher here:
//  - Pointers are device pointers already validated by the caller (shape, dtype, device); `dt*` arguments
//    are DType values (kF32, kBF16, kF16) cast to int, and kernels load/store through them with fp32
//    arithmetic. Index arrays are int32.
//  - Work is enqueued on `stream` and the launcher returns cudaGetLastError() (launch failures only;
//    execution faults surface at the next synchronization).
//  - Kernels that read indices never trust them: an out-of-range index skips that row and sets a bit in
//    the backend's device error word `err` (see kErr* below), which the backend checks when it
//    synchronizes and reports as INVALID_ARGUMENT naming the op.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace tessera::cuda_kernels {

// Bits of the device error word.
enum : int {
  kErrGatherIndex = 1 << 0,
  kErrScatterIndex = 1 << 1,
  kErrRowDotIndex = 1 << 2,
  kErrEmbeddingIndex = 1 << 3,
  kErrTargetIndex = 1 << 4,
  kErrMoeSortValue = 1 << 5,  // MoeSortAssignments: a topk_idx, token_rank or weight_table value out of range
  kErrMoeOffsets = 1 << 6,    // GroupedMatmulByOffsets: offsets[w..w+1] not a row range of [0, M]
};

// ---- cuda_elementwise.cu ----------------------------------------------------------------------------
cudaError_t Fill(void* x, int dt_or_i32, int64_t n, float value, bool is_i32, cudaStream_t stream);
cudaError_t Convert(const void* src, int dt_src, void* dst, int dt_dst, int64_t n, cudaStream_t stream);
// Many copies (with dtype conversion) in one launch: desc[i] copies n elements src -> dst.
struct CopyDesc {
  const void* src;
  void* dst;
  int64_t n;
  int dts, dtd;
};
cudaError_t CopyMany(const CopyDesc* desc_dev, int count, int64_t max_n, cudaStream_t stream);
cudaError_t Add(const void* a, int dta, const void* b, int dtb, void* out, int dto, int64_t n,
                cudaStream_t stream);
cudaError_t Axpy(float alpha, const void* x, int dtx, void* y, int dty, int64_t n, cudaStream_t stream);
cudaError_t Scale(void* x, int dt, int64_t n, float alpha, cudaStream_t stream);
// Accumulates sum(x^2) into *acc (device double, zeroed by the caller).
cudaError_t SumSquares(const void* x, int dt, int64_t n, double* acc, cudaStream_t stream);
cudaError_t SwiGluForward(const void* gate, int dtg, const void* up, int dtu, void* out, int dto, int64_t n,
                          cudaStream_t stream);
cudaError_t SwiGluBackward(const void* gate, int dtg, const void* up, int dtu, const void* dout, int dtd,
                           void* dgate, int dtdg, void* dup, int dtdu, int64_t n, cudaStream_t stream);
// bc1 = 1 - beta1^t, bc2 = 1 - beta2^t (computed on the host in double).
cudaError_t AdamW(void* param, int dtp, const void* grad, int dtg, float* m, float* v, int64_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, float bc1, float bc2,
                  cudaStream_t stream);
// Batched AdamW: desc[i] is one AdamW of n elements (weight decay wd), then narrow (if not null) takes the
// parameter's new value in dtype dtn.
struct AdamWDesc {
  void* param;
  const void* grad;
  float* m;
  float* v;
  void* narrow;
  int64_t n;
  float wd;
  int dtp, dtg, dtn;
};
cudaError_t AdamWMany(const AdamWDesc* desc_dev, int count, int64_t max_n, float lr, float beta1, float beta2,
                      float eps, float bc1, float bc2, cudaStream_t stream);

// ---- cuda_rows.cu: gather / scatter / embedding / router ----------------------------------------------
// *flag = min(*flag, i) for every idx[i] outside [lo, hi) (the caller presets *flag above any i).
cudaError_t CheckIndices(const int32_t* idx, int64_t n, int32_t lo, int32_t hi, int* flag, cudaStream_t stream);
cudaError_t GatherRows(const void* src, int dts, int64_t n_src, const int32_t* idx, const float* scale,
                       void* dst, int dtd, int64_t m, int64_t d, int err_bit, int* err, cudaStream_t stream);
cudaError_t ScatterAddRows(const void* src, int dts, const int32_t* idx, const float* scale, void* dst,
                           int dtd, int64_t n_dst, int64_t m, int64_t d, int err_bit, int* err,
                           cudaStream_t stream);
cudaError_t RowDotGather(const void* a, int dta, const void* b, int dtb, int64_t n_b, const int32_t* idx,
                         void* out, int dto, int64_t m, int64_t d, int* err, cudaStream_t stream);
cudaError_t RouterForward(const void* logits, int dtl, int64_t n, int e, int k, bool normalize, void* probs,
                          int dtp, int32_t* topk_idx, float* topk_w, cudaStream_t stream);
cudaError_t RouterBackward(const void* probs, int dtp, const int32_t* topk_idx, const float* topk_w,
                           bool normalize, const float* dtopk_w, void* dlogits, int dtl, int64_t n, int e,
                           int k, cudaStream_t stream);

// ---- cuda_norm_vocab.cu: RMSNorm, RoPE, log-softmax, cross-entropy -------------------------------------
cudaError_t RmsNormForward(const void* x, int dtx, const void* w, int dtw, float eps, void* out, int dto,
                           float* rstd, int64_t n, int64_t d, cudaStream_t stream);
cudaError_t RmsNormBackward(const void* x, int dtx, const void* w, int dtw, const float* rstd,
                            const void* dout, int dtdo, void* dx, int dtdx, void* dw, int dtdw, int64_t n,
                            int64_t d, cudaStream_t stream);
cudaError_t Rope(void* x, int dt, const int32_t* pos, int64_t n, int64_t heads, int64_t head_dim,
                 float theta, bool inverse, cudaStream_t stream);
cudaError_t LogSoftmax(const void* logits, int dtl, void* out, int dto, int64_t n, int64_t v,
                       cudaStream_t stream);
cudaError_t CrossEntropyForward(const void* logits, int dtl, const int32_t* targets, void* loss, int dtloss,
                                float* lse, int64_t n, int64_t v, int* err, cudaStream_t stream);
cudaError_t CrossEntropyBackward(const void* logits, int dtl, const int32_t* targets, const float* lse,
                                 const void* dloss, int dtdl, void* dlogits, int dtd, int64_t n, int64_t v,
                                 cudaStream_t stream);

// ---- cuda_attention.cu -----------------------------------------------------------------------------
// One sequence of a batched attention call, as the kernels read it from device memory.
struct AttnSeqDesc {
  int64_t q_begin;
  int64_t q_len;
  int64_t kv_len;
  const void* k;
  const void* v;
  void* dk;
  void* dv;
  int64_t window;  // 0: causal; > 0: the query at position p sees keys (p - window, p] (AttentionSeq::window)
};
// Head dims up to kMaxHeadDim are supported.
inline constexpr int kMaxHeadDim = 256;
// `row_seq[i]` gives the sequence index of query row i (or -1: row belongs to no sequence, left alone).
cudaError_t AttentionForward(const void* q, int dtq, const AttnSeqDesc* seqs, const int32_t* row_seq,
                             int dtkv, int64_t nq, int heads, int kv_heads, int head_dim, float scale,
                             void* out, int dto, float* lse, cudaStream_t stream);
cudaError_t AttentionBackward(const void* q, int dtq, const AttnSeqDesc* seqs, const int32_t* row_seq,
                              int dtkv, int dtdkv, int64_t nq, int heads, int kv_heads, int head_dim,
                              float scale, const void* out, int dto, const float* lse, const void* dout,
                              int dtdo, void* dq, int dtdq, cudaStream_t stream);

// ---- cuda_attention_tiled.cu ------------------------------------------------------------------------
// Tensor-core (WMMA bf16) FlashAttention-style kernels for the same op, used for bf16 q/k/v/dout with
// head_dim 64 or 128 (TiledAttentionSupports) when queries come in runs (prefill, training). A tile is
// 64 consecutive rows of one sequence: `offset` is its first query row (forward, dq) or key row (dk/dv)
// counted from the sequence's start. Pointers (q, k, v, dout rows) must be 16-byte aligned.
struct AttnTile {
  int32_t seq;
  int32_t offset;
};
inline constexpr int kAttnTileRows = 64;
bool TiledAttentionSupports(int head_dim);
// The most dynamic shared memory one of these kernels asks for (head_dim 128); a device that cannot give
// a block this much runs the row-wise kernels.
int TiledAttentionSharedBytes();
// out/lse of every row of every tile (rows in no tile are left alone).
cudaError_t TiledAttentionForward(const void* q, const AttnSeqDesc* seqs, const AttnTile* q_tiles, int64_t num_q_tiles,
                                  int heads, int kv_heads, int head_dim, float scale, void* out, int dto, float* lse,
                                  cudaStream_t stream);
// dk/dv (per sequence, accumulate) from key tiles, then dq (overwrites the rows of the query tiles only).
// `dvec` = AttentionRowDots of (out, dout).
cudaError_t TiledAttentionBackward(const void* q, const AttnSeqDesc* seqs, const AttnTile* q_tiles,
                                   int64_t num_q_tiles, const AttnTile* k_tiles, int64_t num_k_tiles, int heads,
                                   int kv_heads, int head_dim, float scale, const float* lse, const float* dvec,
                                   const void* dout, int dtdkv, void* dq, int dtdq, cudaStream_t stream);
// d[i * heads + h] = dout[i, h, :] . out[i, h, :] where row_seq[i] >= 0, else 0. d: [nq * heads] f32.
cudaError_t AttentionRowDots(const void* out, int dto, const void* dout, int dtdo, const int32_t* row_seq, int64_t nq,
                             int heads, int head_dim, float* d, cudaStream_t stream);

// ---- cuda_grouped_gemm.cu ----------------------------------------------------------------------------
// One row-major problem C[M,N] = alpha * opA(A)[M,K] @ opB(B)[K,N] + beta * C, where
// opA(A)(m,k) = trans_a ? A[k*lda + m] : A[m*lda + k] and opB(B)(k,n) = trans_b ? B[n*ldb + k] : B[k*ldb + n].
struct GemmProblem {
  const void* a;
  const void* b;
  void* c;
  int64_t m, n, k;
  int64_t lda, ldb, ldc;
  int trans_a, trans_b;
  float alpha, beta;
  int64_t tile_begin;  // prefix sum of the tiles of the problems before this one (set by the launcher's caller)
};
inline constexpr int kGroupedTileM = 64;
inline constexpr int kGroupedTileN = 64;
// All problems share dtypes (dta for A, dtb for B, dtc for C). `problems` is a device array; the total
// tile count is the last problem's tile_begin + its tiles (computed by the caller with the tile sizes above).
cudaError_t GroupedGemm(const GemmProblem* problems, int num_problems, int64_t total_tiles, int dta, int dtb,
                        int dtc, cudaStream_t stream);

// ---- cuda_moe_routing.cu: device-side MoE grouping (backend.h's MoeSortAssignments, GroupedMatmulByOffsets) --
// Sorts the m = n*k assignments by weight set (stable); writes token_idx[m], gate_w[m] and offsets[sets + 1].
// Assignments with an out-of-range expert, rank or table entry set kErrMoeSortValue and sort after every
// set (offsets[sets] counts only the valid ones). Needs m <= INT32_MAX and 0 <= sets < INT32_MAX.
cudaError_t MoeSortAssignments(const int32_t* topk_idx, const float* topk_w, const int32_t* token_rank,
                               const int32_t* weight_table, int64_t n, int64_t k, int64_t ranks, int64_t experts,
                               int32_t sets, int32_t* token_idx, float* gate_w, int32_t* offsets, int* err,
                               cudaStream_t stream);
// y[offsets[w] : offsets[w+1]] = x[offsets[w] : offsets[w+1]] @ weights[w]^T for w in [0, sets), a GEMV-style
// kernel for small groups (decode). x: [m, in] of dtype dtx; `weights`: a device array of `sets` pointers to
// [out, in] matrices of dtx; y: [m, out] of dtype dty. vec: x and every weight are 16-byte aligned and
// in * dtype size is a multiple of 16 (16-byte loads). A set whose offsets are not a row range of [0, m]
// is skipped and sets kErrMoeOffsets.
cudaError_t GroupedMatmulByOffsets(const void* x, int dtx, const void* const* weights, const int32_t* offsets,
                                   int32_t sets, int64_t m, int64_t in, int64_t out, void* y, int dty, bool vec,
                                   int* err, cudaStream_t stream);

}  // namespace tessera::cuda_kernels
