// Device code of the grouped GEMM kernels (launcher: cuda_grouped_gemm.cu). Kept in a header so
// tests/core/backend_cuda/elementwise_attention_gemm_emulation_test.cc can run these same kernel bodies on
// the host (a scalar WMMA standing in for <mma.h>) where no GPU is present.
//
// Our own grouped GEMM: many independent row-major problems C = alpha * opA(A) opB(B) + beta * C (one per
// expert group) in ONE launch, the alternative to cublasGemmGroupedBatchedEx (cuda_matmul.cc selects).
//
// Math: C[m,n] = alpha * sum_k opA(m,k) * opB(k,n) + beta * C[m,n], fp32 accumulation; beta == 0 never
// reads C (so C may be uninitialized). See GemmProblem in cuda_kernels.h for opA/opB.
// Scheduling: the grid is the concatenation of every problem's 64x64 output tiles; block b finds its
// problem by binary search over the problems' tile_begin prefix sums (problems with no tiles take none).
// Two bodies:
//  - A and B both bf16: tensor cores through WMMA (16x16x16 bf16 -> fp32), 4 warps, each a 32x32 quarter;
//  - any other dtype mix: an fp32 SIMT body, 256 threads, each 4x4 outputs.
// Memory contract: each block streams its 64-row A panel and 64-column B panel through shared memory in
// K steps (A and B tiles are re-read once per tile row/column of C); the tile loaders pick the thread
// mapping that keeps global reads coalesced along whichever dimension is contiguous. First version: no
// cp.async pipelining or wgmma, so expect it to trail cuBLAS on large problems (to be measured).
#pragma once

#include <mma.h>

#include "core/backend/cuda/cuda_device_util.cuh"
#include "core/backend/cuda/cuda_kernels.h"

// An unnamed namespace: the .cu and the host emulation test each get their own copies (see
// cuda_attention_tiled_kernels.cuh).
namespace tessera::cuda_kernels::grouped_gemm {
namespace {

constexpr int BM = kGroupedTileM;
constexpr int BN = kGroupedTileN;

__device__ __forceinline__ int FindProblem(const GemmProblem* problems, int num_problems, int64_t tile) {
  int lo = 0, hi = num_problems - 1;  // last problem with tile_begin <= tile
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (problems[mid].tile_begin <= tile) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

__device__ __forceinline__ float LoadA(const GemmProblem& p, int dta, int64_t m, int64_t k) {
  if (m >= p.m || k >= p.k) return 0.0f;
  return Ld(p.a, dta, p.trans_a ? k * p.lda + m : m * p.lda + k);
}

__device__ __forceinline__ float LoadB(const GemmProblem& p, int dtb, int64_t k, int64_t n) {
  if (k >= p.k || n >= p.n) return 0.0f;
  return Ld(p.b, dtb, p.trans_b ? n * p.ldb + k : k * p.ldb + n);
}

__device__ __forceinline__ void StoreC(const GemmProblem& p, int dtc, int64_t m, int64_t n, float acc) {
  if (m >= p.m || n >= p.n) return;
  const int64_t off = m * p.ldc + n;
  float v = p.alpha * acc;
  if (p.beta != 0.0f) v = fmaf(p.beta, Ld(p.c, dtc, off), v);
  St(p.c, dtc, off, v);
}

// ---- SIMT body (any dtypes) ----
constexpr int kSimtThreads = 256;
constexpr int kSimtBK = 16;

__global__ void __launch_bounds__(kSimtThreads)
GroupedGemmSimtKernel(const GemmProblem* problems, int num_problems, int dta, int dtb, int dtc) {
  __shared__ float As[kSimtBK][BM + 4];
  __shared__ float Bs[kSimtBK][BN + 4];
  const GemmProblem p = problems[FindProblem(problems, num_problems, blockIdx.x)];
  const int64_t local = blockIdx.x - p.tile_begin;
  const int64_t tiles_n = (p.n + BN - 1) / BN;
  const int64_t m0 = (local / tiles_n) * BM, n0 = (local % tiles_n) * BN;
  const int t = threadIdx.x, ty = t / 16, tx = t % 16;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < p.k; k0 += kSimtBK) {
#pragma unroll
    for (int q = 0; q < (BM * kSimtBK) / kSimtThreads; ++q) {
      const int e = t + kSimtThreads * q;
      // Consecutive threads walk the dimension that is contiguous in memory.
      const int mm = p.trans_a ? e % BM : e / kSimtBK, ka = p.trans_a ? e / BM : e % kSimtBK;
      As[ka][mm] = LoadA(p, dta, m0 + mm, k0 + ka);
      const int nn = p.trans_b ? e / kSimtBK : e % BN, kb = p.trans_b ? e % kSimtBK : e / BN;
      Bs[kb][nn] = LoadB(p, dtb, k0 + kb, n0 + nn);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kSimtBK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) a[r] = As[kk][ty + 16 * r];
#pragma unroll
      for (int c = 0; c < 4; ++c) b[c] = Bs[kk][tx + 16 * c];
#pragma unroll
      for (int r = 0; r < 4; ++r) {
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[r][c] = fmaf(a[r], b[c], acc[r][c]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 4; ++r) {
#pragma unroll
    for (int c = 0; c < 4; ++c) StoreC(p, dtc, m0 + ty + 16 * r, n0 + tx + 16 * c, acc[r][c]);
  }
}

// ---- WMMA body (bf16 A and B) ----
constexpr int kWmmaThreads = 128;
constexpr int kWmmaBK = 32;
constexpr int kPadA = kWmmaBK + 8;  // row pitch in bf16 elements (multiple of 8, keeps 32-byte fragment alignment)
constexpr int kPadB = BN + 8;
constexpr int kPadC = BN + 4;

__global__ void __launch_bounds__(kWmmaThreads, 4)
GroupedGemmWmmaKernel(const GemmProblem* problems, int num_problems, int dtc) {
  using namespace nvcuda;
  __shared__ __align__(128) __nv_bfloat16 As[BM][kPadA];
  __shared__ __align__(128) __nv_bfloat16 Bs[kWmmaBK][kPadB];
  __shared__ __align__(128) float Cs[BM][kPadC];
  const GemmProblem p = problems[FindProblem(problems, num_problems, blockIdx.x)];
  const int64_t local = blockIdx.x - p.tile_begin;
  const int64_t tiles_n = (p.n + BN - 1) / BN;
  const int64_t m0 = (local / tiles_n) * BM, n0 = (local % tiles_n) * BN;
  const int t = threadIdx.x, warp = t >> 5, wm = warp / 2, wn = warp % 2;
  const __nv_bfloat16* a = static_cast<const __nv_bfloat16*>(p.a);
  const __nv_bfloat16* b = static_cast<const __nv_bfloat16*>(p.b);
  const __nv_bfloat16 zero = __float2bfloat16_rn(0.0f);

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  }
  for (int64_t k0 = 0; k0 < p.k; k0 += kWmmaBK) {
    // Partly unrolled: full unrolling of the 16 loads with 64-bit addressing needs > 255 registers.
#pragma unroll 4
    for (int q = 0; q < (BM * kWmmaBK) / kWmmaThreads; ++q) {
      const int e = t + kWmmaThreads * q;
      {
        const int mm = p.trans_a ? e % BM : e / kWmmaBK, ka = p.trans_a ? e / BM : e % kWmmaBK;
        const int64_t gm = m0 + mm, gk = k0 + ka;
        As[mm][ka] = (gm < p.m && gk < p.k) ? a[p.trans_a ? gk * p.lda + gm : gm * p.lda + gk] : zero;
      }
      {
        const int nn = p.trans_b ? e / kWmmaBK : e % BN, kb = p.trans_b ? e % kWmmaBK : e / BN;
        const int64_t gn = n0 + nn, gk = k0 + kb;
        Bs[kb][nn] = (gn < p.n && gk < p.k) ? b[p.trans_b ? gn * p.ldb + gk : gk * p.ldb + gn] : zero;
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kWmmaBK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], &As[wm * 32 + i * 16][kk], kPadA);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], &Bs[kk][wn * 32 + j * 16], kPadB);
#pragma unroll
      for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::store_matrix_sync(&Cs[wm * 32 + i * 16][wn * 32 + j * 16], acc[i][j], kPadC, wmma::mem_row_major);
    }
  }
  __syncthreads();
  for (int e = t; e < BM * BN; e += kWmmaThreads) {
    const int mm = e / BN, nn = e % BN;
    StoreC(p, dtc, m0 + mm, n0 + nn, Cs[mm][nn]);
  }
}

}  // namespace
}  // namespace tessera::cuda_kernels::grouped_gemm
