// Device code of the row kernels (launchers, grid sizing and CUB's sort: cuda_rows.cu). Kept in a header so
// tests/core/backend_cuda/rows_norm_vocab_emulation_test.cc can run these same kernel bodies on the host
// where no GPU is present.
//
// Row kernels: gather / scatter-add (MoE permute / unpermute, embedding), row dot with gather (the
// gradient of the gather scale), and the fused router (softmax + top-k + renormalization, and backward).
//
// Math: see backend.h (GatherRows, ScatterAddRows, RowDotGather, RouterForward/Backward).
// Router top-k order is (prob descending, expert index ascending); the kernel selects the k entries one
// by one, each time the largest entry strictly after the previous one in that order, so it needs no list
// of chosen experts and works for any k <= E.
// Memory contract: one thread block (gather/scatter/dot) or one warp (router) per row; rows are read
// with consecutive threads on consecutive elements (coalesced). Bad indices skip the row and set a bit
// of the error word.
// Scatter-add is deterministic, and sums in the CPU reference's order: the (idx[i], i) pairs are radix
// sorted (CUB, stable) so each destination row's sources are one run in increasing i, and the block at
// the start of each run adds them into the row in that order with no atomics. Atomics made the MoE
// unpermute (a token's k expert outputs) sum in a different order on every run, so the same query could
// give a different log-probability twice in a row (found by the isolation step of the demo on an H100).
#pragma once

#include "core/backend/cuda/cuda_device_util.cuh"
#include "core/backend/cuda/cuda_kernels.h"

// An unnamed namespace: the .cu and the host emulation test each get their own copies (see
// cuda_attention_tiled_kernels.cuh).
namespace tessera::cuda_kernels::rows {
namespace {

__global__ void GatherRowsKernel(const void* src, int dts, int64_t n_src, const int32_t* idx, const float* scale,
                                 void* dst, int dtd, int64_t m, int64_t d, int err_bit, int* err) {
  for (int64_t i = blockIdx.x; i < m; i += gridDim.x) {
    const int32_t j = idx[i];
    if (j < 0 || j >= n_src) {
      if (threadIdx.x == 0) atomicOr(err, err_bit);
      continue;
    }
    const float s = scale != nullptr ? scale[i] : 1.0f;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) St(dst, dtd, i * d + c, s * Ld(src, dts, j * d + c));
  }
}

__global__ void IotaKernel(int32_t* v, int64_t m) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < m;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    v[i] = static_cast<int32_t>(i);
  }
}

// One block per sorted position p; only the first position of each run of equal keys does the run.
__global__ void ScatterAddSortedKernel(const void* src, int dts, const int32_t* keys, const int32_t* rows,
                                       const float* scale, void* dst, int dtd, int64_t n_dst, int64_t m, int64_t d,
                                       int err_bit, int* err) {
  for (int64_t p = blockIdx.x; p < m; p += gridDim.x) {
    const int32_t j = keys[p];
    if (p > 0 && keys[p - 1] == j) continue;  // not the start of a run (uniform across the block)
    if (j < 0 || j >= n_dst) {
      if (threadIdx.x == 0) atomicOr(err, err_bit);
      continue;
    }
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      float acc = Ld(dst, dtd, j * d + c);
      for (int64_t q = p; q < m && keys[q] == j; ++q) {
        const int32_t i = rows[q];
        acc += (scale != nullptr ? scale[i] : 1.0f) * Ld(src, dts, i * d + c);
      }
      St(dst, dtd, j * d + c, acc);
    }
  }
}

__global__ void RowDotGatherKernel(const void* a, int dta, const void* b, int dtb, int64_t n_b,
                                   const int32_t* idx, void* out, int dto, int64_t m, int64_t d, int* err) {
  __shared__ float scratch[32];
  for (int64_t i = blockIdx.x; i < m; i += gridDim.x) {
    const int32_t j = idx[i];
    if (j < 0 || j >= n_b) {
      if (threadIdx.x == 0) atomicOr(err, kErrRowDotIndex);
      continue;  // uniform across the block: no barrier is skipped by only some threads
    }
    float s = 0.0f;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) s = fmaf(Ld(a, dta, i * d + c), Ld(b, dtb, j * d + c), s);
    s = BlockSum(s, scratch);
    if (threadIdx.x == 0) St(out, dto, i, s);
  }
}

__global__ void CheckIndicesKernel(const int32_t* idx, int64_t n, int32_t lo, int32_t hi, int* flag) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    if (idx[i] < lo || idx[i] >= hi) atomicMin(flag, static_cast<int>(i));
  }
}

constexpr int kRouterWarps = 4;

// One warp per row. p_e = exp(l_e - max) / sum is recomputed where needed (E is small: tens to hundreds).
__global__ void RouterForwardKernel(const void* logits, int dtl, int64_t n, int e, int k, bool normalize,
                                    void* probs, int dtp, int32_t* topk_idx, float* topk_w) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * int64_t{kRouterWarps} + (threadIdx.x >> 5);
  if (row >= n) return;
  const int64_t base = row * e;
  float mx = -INFINITY;
  for (int j = lane; j < e; j += 32) mx = fmaxf(mx, Ld(logits, dtl, base + j));
  mx = WarpMax(mx);
  float sum = 0.0f;
  for (int j = lane; j < e; j += 32) sum += expf(Ld(logits, dtl, base + j) - mx);
  sum = WarpSum(sum);
  const float inv = 1.0f / sum;
  for (int j = lane; j < e; j += 32) St(probs, dtp, base + j, expf(Ld(logits, dtl, base + j) - mx) * inv);

  float prev_p = INFINITY;
  int prev_j = -1;
  float chosen_sum = 0.0f;
  for (int t = 0; t < k; ++t) {
    float best_p = -1.0f;
    int best_j = e;  // larger than any index: loses every tie
    for (int j = lane; j < e; j += 32) {
      const float p = expf(Ld(logits, dtl, base + j) - mx) * inv;
      const bool after_prev = p < prev_p || (p == prev_p && j > prev_j);
      if (after_prev && (p > best_p || (p == best_p && j < best_j))) {
        best_p = p;
        best_j = j;
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float op = __shfl_xor_sync(0xffffffffu, best_p, o);
      const int oj = __shfl_xor_sync(0xffffffffu, best_j, o);
      if (op > best_p || (op == best_p && oj < best_j)) {
        best_p = op;
        best_j = oj;
      }
    }
    if (lane == 0) {
      topk_idx[row * k + t] = best_j;
      topk_w[row * k + t] = best_p;
    }
    chosen_sum += best_p;
    prev_p = best_p;
    prev_j = best_j;
  }
  if (normalize) {
    __syncwarp();
    const float inv_sum = 1.0f / chosen_sum;
    for (int t = lane; t < k; t += 32) topk_w[row * k + t] *= inv_sum;
  }
}

// dp_sel[t] = normalize ? (dw[t] - sum_u dw[u] w[u]) / S : dw[t], S = sum_t probs[idx[t]];
// dlogits[e] = p[e] * (dp[e] - sum_t dp_sel[t] p[idx[t]]), dp[e] = sum of dp_sel[t] over t with idx[t] == e.
__global__ void RouterBackwardKernel(const void* probs, int dtp, const int32_t* topk_idx, const float* topk_w,
                                     bool normalize, const float* dtopk_w, void* dlogits, int dtl, int64_t n,
                                     int e, int k) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * int64_t{kRouterWarps} + (threadIdx.x >> 5);
  if (row >= n) return;
  const int64_t base = row * e;
  const int32_t* idx = topk_idx + row * k;
  const float* w = topk_w + row * k;
  const float* dw = dtopk_w + row * k;
  float s = 0.0f, dww = 0.0f;
  for (int t = lane; t < k; t += 32) {
    const int32_t j = idx[t];
    if (j >= 0 && j < e) s += Ld(probs, dtp, base + j);
    dww += dw[t] * w[t];
  }
  s = WarpSum(s);
  dww = WarpSum(dww);
  // dot = sum_t dp_sel[t] * p[idx[t]]
  float dot = 0.0f;
  for (int t = lane; t < k; t += 32) {
    const int32_t j = idx[t];
    if (j < 0 || j >= e) continue;
    const float dp = normalize ? (dw[t] - dww) / s : dw[t];
    dot += dp * Ld(probs, dtp, base + j);
  }
  dot = WarpSum(dot);
  for (int j = lane; j < e; j += 32) {
    float dp = 0.0f;
    for (int t = 0; t < k; ++t) {
      if (idx[t] == j) dp += normalize ? (dw[t] - dww) / s : dw[t];
    }
    St(dlogits, dtl, base + j, Ld(probs, dtp, base + j) * (dp - dot));
  }
}

}  // namespace
}  // namespace tessera::cuda_kernels::rows
