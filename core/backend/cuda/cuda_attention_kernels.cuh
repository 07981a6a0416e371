// Device code of the row-wise attention kernels (launchers: cuda_attention.cu). Kept in a header so
// tests/core/backend_cuda/elementwise_attention_gemm_emulation_test.cc can run these same kernel bodies on
// the host where no GPU is present.
//
// Causal GQA attention over a batch of sequences with KV caches, forward and backward.
//
// Math: for query row i of sequence s (absolute position a = kv_len - q_len + (i - q_begin)) and head h,
// kv head g = h / (H / KVH):  s_j = scale * q_i . k_j for j in [first, a] (first = 0, or with a sliding
// window max(0, a - window + 1): keys before it are never read);  out = sum_j softmax(s)_j v_j;
// lse = log sum_j exp(s_j). Backward (dO = dout, D = dO . out): p_j = exp(s_j - lse),
// ds_j = p_j (dO . v_j - D);  dq = scale * sum_j ds_j k_j;  dk_j += scale * ds_j q;  dv_j += p_j dO.
//
// Kernel shape (a first, straightforward version): one block of 4 warps per (query row, head); the warps
// split the keys (warp w takes j = w, w+4, ...), each keeps an online softmax (running max m, sum l and
// the output accumulator; head_dim / 32 values per lane, head_dim <= 256), and the four partial states are
// merged through shared memory at the end. Backward uses the same split and adds into dk / dv with
// atomics (many query rows touch each key row), so dk / dv summation order is not deterministic.
// Rows outside every sequence: the forward leaves out/lse alone; the backward writes dq = 0 there.
// Memory contract: each block reads its q row once and streams the key/value rows it attends to (K and V
// are re-read by every query row and head that uses them; L2 absorbs part of that). `seqs` and `row_seq`
// are device arrays uploaded by the host for this call.
#pragma once

#include "core/backend/cuda/cuda_device_util.cuh"
#include "core/backend/cuda/cuda_kernels.h"

// An unnamed namespace: the .cu and the host emulation test each get their own copies (see
// cuda_attention_tiled_kernels.cuh).
namespace tessera::cuda_kernels::attention {
namespace {

constexpr int kWarps = 4;
constexpr int kPerLane = kMaxHeadDim / 32;

struct RowInfo {
  const AttnSeqDesc* seq;
  int64_t first;  // keys first .. nkeys-1 are visible
  int64_t nkeys;
  int kvh;
};

__device__ __forceinline__ bool GetRow(const AttnSeqDesc* seqs, const int32_t* row_seq, int64_t i, int h,
                                       int heads, int kv_heads, RowInfo* info) {
  const int32_t s = row_seq[i];
  if (s < 0) return false;
  info->seq = seqs + s;
  info->nkeys = info->seq->kv_len - info->seq->q_len + (i - info->seq->q_begin) + 1;
  info->first = info->seq->window > 0 && info->nkeys > info->seq->window ? info->nkeys - info->seq->window : 0;
  info->kvh = h / (heads / kv_heads);
  return info->nkeys > 0;
}

__global__ void __launch_bounds__(kWarps * 32)
AttentionForwardKernel(const void* q, int dtq, const AttnSeqDesc* seqs, const int32_t* row_seq, int dtkv,
                       int heads, int kv_heads, int head_dim, float scale, void* out, int dto, float* lse) {
  __shared__ float sm_m[kWarps], sm_l[kWarps];
  __shared__ float sm_acc[kWarps][kMaxHeadDim];
  const int64_t i = blockIdx.x;
  const int h = blockIdx.y;
  RowInfo info;
  if (!GetRow(seqs, row_seq, i, h, heads, kv_heads, &info)) return;  // uniform across the block
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t qbase = (i * heads + h) * head_dim;
  float qv[kPerLane], acc[kPerLane];
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) {
    const int c = lane + 32 * r;
    qv[r] = c < head_dim ? Ld(q, dtq, qbase + c) * scale : 0.0f;
    acc[r] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const void* k = info.seq->k;
  const void* v = info.seq->v;
  for (int64_t j = info.first + warp; j < info.nkeys; j += kWarps) {
    const int64_t kvbase = (j * kv_heads + info.kvh) * head_dim;
    float s = 0.0f;
#pragma unroll
    for (int r = 0; r < kPerLane; ++r) {
      const int c = lane + 32 * r;
      if (c < head_dim) s = fmaf(qv[r], Ld(k, dtkv, kvbase + c), s);
    }
    s = WarpSum(s);
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new);
    const float p = expf(s - m_new);
    l = l * corr + p;
#pragma unroll
    for (int r = 0; r < kPerLane; ++r) {
      const int c = lane + 32 * r;
      if (c < head_dim) acc[r] = fmaf(p, Ld(v, dtkv, kvbase + c), acc[r] * corr);
    }
    m = m_new;
  }
  if (lane == 0) {
    sm_m[warp] = m;
    sm_l[warp] = l;
  }
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) {
    const int c = lane + 32 * r;
    if (c < head_dim) sm_acc[warp][c] = acc[r];
  }
  __syncthreads();
  float gm = -INFINITY;
  for (int w = 0; w < kWarps; ++w) gm = fmaxf(gm, sm_m[w]);
  float gl = 0.0f, wscale[kWarps];
  for (int w = 0; w < kWarps; ++w) {
    wscale[w] = sm_m[w] == -INFINITY ? 0.0f : expf(sm_m[w] - gm);
    gl += sm_l[w] * wscale[w];
  }
  const float inv = 1.0f / gl;
  for (int c = threadIdx.x; c < head_dim; c += blockDim.x) {
    float o = 0.0f;
    for (int w = 0; w < kWarps; ++w) o = fmaf(sm_acc[w][c], wscale[w], o);
    St(out, dto, qbase + c, o * inv);
  }
  if (lse != nullptr && threadIdx.x == 0) lse[i * heads + h] = gm + logf(gl);
}

__global__ void __launch_bounds__(kWarps * 32)
AttentionBackwardKernel(const void* q, int dtq, const AttnSeqDesc* seqs, const int32_t* row_seq, int dtkv,
                        int dtdkv, int heads, int kv_heads, int head_dim, float scale, const void* out, int dto,
                        const float* lse, const void* dout, int dtdo, void* dq, int dtdq) {
  __shared__ float sm_dq[kWarps][kMaxHeadDim];
  const int64_t i = blockIdx.x;
  const int h = blockIdx.y;
  RowInfo info;
  if (!GetRow(seqs, row_seq, i, h, heads, kv_heads, &info)) {
    // A row outside every sequence has zero gradient (dq overwrites).
    for (int c = threadIdx.x; c < head_dim; c += blockDim.x) St(dq, dtdq, (i * heads + h) * head_dim + c, 0.0f);
    return;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t qbase = (i * heads + h) * head_dim;
  float qv[kPerLane], dov[kPerLane], dqv[kPerLane];
  float dsum = 0.0f;
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) {
    const int c = lane + 32 * r;
    qv[r] = c < head_dim ? Ld(q, dtq, qbase + c) : 0.0f;
    dov[r] = c < head_dim ? Ld(dout, dtdo, qbase + c) : 0.0f;
    if (c < head_dim) dsum = fmaf(dov[r], Ld(out, dto, qbase + c), dsum);
    dqv[r] = 0.0f;
  }
  dsum = WarpSum(dsum);
  const float row_lse = lse[i * heads + h];
  const AttnSeqDesc* sq = info.seq;
  for (int64_t j = info.first + warp; j < info.nkeys; j += kWarps) {
    const int64_t kvbase = (j * kv_heads + info.kvh) * head_dim;
    float s = 0.0f, dp = 0.0f;
#pragma unroll
    for (int r = 0; r < kPerLane; ++r) {
      const int c = lane + 32 * r;
      if (c < head_dim) {
        s = fmaf(qv[r], Ld(sq->k, dtkv, kvbase + c), s);
        dp = fmaf(dov[r], Ld(sq->v, dtkv, kvbase + c), dp);
      }
    }
    s = WarpSum(s) * scale;
    dp = WarpSum(dp);
    const float p = expf(s - row_lse);
    const float ds = p * (dp - dsum);
#pragma unroll
    for (int r = 0; r < kPerLane; ++r) {
      const int c = lane + 32 * r;
      if (c < head_dim) {
        dqv[r] = fmaf(ds, Ld(sq->k, dtkv, kvbase + c), dqv[r]);
        if (sq->dk != nullptr) AtomicAddTo(sq->dk, dtdkv, kvbase + c, scale * ds * qv[r]);
        if (sq->dv != nullptr) AtomicAddTo(sq->dv, dtdkv, kvbase + c, p * dov[r]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) {
    const int c = lane + 32 * r;
    if (c < head_dim) sm_dq[warp][c] = dqv[r];
  }
  __syncthreads();
  for (int c = threadIdx.x; c < head_dim; c += blockDim.x) {
    float g = 0.0f;
    for (int w = 0; w < kWarps; ++w) g += sm_dq[w][c];
    St(dq, dtdq, qbase + c, scale * g);
  }
}

}  // namespace
}  // namespace tessera::cuda_kernels::attention
