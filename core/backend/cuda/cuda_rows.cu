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
#include <cub/device/device_radix_sort.cuh>

#include "core/backend/cuda/cuda_device_util.cuh"
#include "core/backend/cuda/cuda_kernels.h"

namespace tessera::cuda_kernels {
namespace {

int RowThreads(int64_t d) { return d >= 256 ? 256 : (d >= 128 ? 128 : (d >= 64 ? 64 : 32)); }

unsigned RowBlocks(int64_t rows) {
  return static_cast<unsigned>(rows < 1 ? 1 : (rows > (1LL << 31) - 1 ? (1LL << 31) - 1 : rows));
}

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

cudaError_t CheckIndices(const int32_t* idx, int64_t n, int32_t lo, int32_t hi, int* flag, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  unsigned blocks = GridFor(n, 256);
  if (blocks > 256) blocks = 256;
  CheckIndicesKernel<<<blocks, 256, 0, stream>>>(idx, n, lo, hi, flag);
  return cudaGetLastError();
}

cudaError_t GatherRows(const void* src, int dts, int64_t n_src, const int32_t* idx, const float* scale,
                       void* dst, int dtd, int64_t m, int64_t d, int err_bit, int* err, cudaStream_t stream) {
  if (m == 0 || d == 0) return cudaSuccess;
  GatherRowsKernel<<<RowBlocks(m), RowThreads(d), 0, stream>>>(src, dts, n_src, idx, scale, dst, dtd, m, d,
                                                             err_bit, err);
  return cudaGetLastError();
}

cudaError_t ScatterAddRows(const void* src, int dts, const int32_t* idx, const float* scale, void* dst, int dtd,
                           int64_t n_dst, int64_t m, int64_t d, int err_bit, int* err, cudaStream_t stream) {
  if (m == 0 || d == 0) return cudaSuccess;
  if (m > INT32_MAX) return cudaErrorInvalidValue;
  const int n = static_cast<int>(m);
  size_t sort_bytes = 0;
  cudaError_t e = cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, idx, static_cast<int32_t*>(nullptr),
                                                  static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
                                                  n, 0, 32, stream);
  if (e != cudaSuccess) return e;
  // Scratch, stream-ordered: rows in, sorted keys, sorted rows, CUB's temporary storage.
  const size_t ints = static_cast<size_t>(m) * sizeof(int32_t), ints_aligned = (ints + 255) / 256 * 256;
  void* scratch = nullptr;
  e = cudaMallocAsync(&scratch, 3 * ints_aligned + sort_bytes, stream);
  if (e != cudaSuccess) return e;
  char* base = static_cast<char*>(scratch);
  int32_t* rows_in = reinterpret_cast<int32_t*>(base);
  int32_t* keys = reinterpret_cast<int32_t*>(base + ints_aligned);
  int32_t* rows = reinterpret_cast<int32_t*>(base + 2 * ints_aligned);
  void* sort_tmp = base + 3 * ints_aligned;
  IotaKernel<<<GridFor(m, 256), 256, 0, stream>>>(rows_in, m);
  e = cudaGetLastError();
  if (e == cudaSuccess) {
    e = cub::DeviceRadixSort::SortPairs(sort_tmp, sort_bytes, idx, keys, rows_in, rows, n, 0, 32, stream);
  }
  if (e == cudaSuccess) {
    ScatterAddSortedKernel<<<RowBlocks(m), RowThreads(d), 0, stream>>>(src, dts, keys, rows, scale, dst, dtd, n_dst,
                                                                       m, d, err_bit, err);
    e = cudaGetLastError();
  }
  const cudaError_t f = cudaFreeAsync(scratch, stream);
  return e != cudaSuccess ? e : f;
}

cudaError_t RowDotGather(const void* a, int dta, const void* b, int dtb, int64_t n_b, const int32_t* idx,
                         void* out, int dto, int64_t m, int64_t d, int* err, cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  RowDotGatherKernel<<<RowBlocks(m), RowThreads(d), 0, stream>>>(a, dta, b, dtb, n_b, idx, out, dto, m, d, err);
  return cudaGetLastError();
}

cudaError_t RouterForward(const void* logits, int dtl, int64_t n, int e, int k, bool normalize, void* probs,
                          int dtp, int32_t* topk_idx, float* topk_w, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int64_t blocks = (n + kRouterWarps - 1) / kRouterWarps;
  RouterForwardKernel<<<RowBlocks(blocks), kRouterWarps * 32, 0, stream>>>(logits, dtl, n, e, k, normalize,
                                                                          probs, dtp, topk_idx, topk_w);
  return cudaGetLastError();
}

cudaError_t RouterBackward(const void* probs, int dtp, const int32_t* topk_idx, const float* topk_w,
                           bool normalize, const float* dtopk_w, void* dlogits, int dtl, int64_t n, int e, int k,
                           cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int64_t blocks = (n + kRouterWarps - 1) / kRouterWarps;
  RouterBackwardKernel<<<RowBlocks(blocks), kRouterWarps * 32, 0, stream>>>(probs, dtp, topk_idx, topk_w,
                                                                           normalize, dtopk_w, dlogits, dtl, n,
                                                                           e, k);
  return cudaGetLastError();
}

}  // namespace tessera::cuda_kernels
