// Direct small-M GEMM kernels (see cpu_small_gemm.h for the math and the beta contract).
//
// Tiling. NT (AVX2): a tile of R rows of a times O rows of b keeps R*O 8-lane accumulators (R*O + 2 <=
// 16 ymm registers) and reads each b row once per R-row block; one horizontal sum per output at the
// end. When b streams from memory (SmallGemmB::kStreamed: decode's weights) two things change. Each
// 4-row tile prefetches the next tile's rows of b: with rows of 4 KiB (k = 1024) every row is its own
// page, where the hardware prefetcher stops, and a 4 x 3 tile keeps only 3 streams in flight. And 6-8
// rows read each tile of b once, for both row blocks (NtRowsStreamed). On a 2-core Zen 3
// (bench_small_gemm, LM head 32000 x 1024): 8 rows 8.5-10.3 ms vs 11.6-13.3, 4 rows 7.1-8.1 vs
// 7.7-8.5. Where b is already in L2 or L3 the same prefetches cost 15-30% (a 1024 x 1024 matrix read
// back from L3: 58 vs 50 GB/s), so the cached path (NtAvx2Cached) has none, and the caller says which
// applies. NT (AVX-512): R <= 3 rows x 8 outputs, reduced jointly (see the AVX-512 section).
// NN: a tile of R rows of c times 8*V columns keeps R*V accumulators; for each k it broadcasts a[r,k]
// and streams row k of b (contiguous), so b is read once per R-row block. Tiles are chosen so that
// every tile has >= 8 independent FMA chains where the shape allows (FMA latency 4, 2 per cycle).
#include "core/backend/cpu/cpu_small_gemm.h"

#include <immintrin.h>

#include <algorithm>

#include "core/backend/cpu/cpu_kernels.h"
#include "core/backend/cpu/cpu_simd_reduce.h"

namespace tessera::cpu {
namespace {

using simd::HSum;
using simd::HSum512;
using simd::HSum8x512;

inline float Finish(float acc, float alpha, float beta, const float* c) {
  return beta == 0.0f ? alpha * acc : alpha * acc + beta * *c;
}

// ---- Portable fallback ------------------------------------------------------------------------------

void NtPortable(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                int64_t ldb, float beta, float* c, int64_t ldc) {
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t j = 0; j < n; ++j) {
      float* cj = c + r * ldc + j;
      *cj = Finish(Dot(a + r * lda, b + j * ldb, k), alpha, beta, cj);
    }
  }
}

void NnPortable(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                int64_t ldb, float beta, float* c, int64_t ldc) {
  for (int64_t r = 0; r < m; ++r) {
    float* cr = c + r * ldc;
    if (beta == 0.0f) {
      std::fill_n(cr, n, 0.0f);
    } else if (beta != 1.0f) {
      for (int64_t j = 0; j < n; ++j) cr[j] *= beta;
    }
    for (int64_t p = 0; p < k; ++p) AxpyRow(alpha * a[r * lda + p], b + p * ldb, cr, n);
  }
}

// ---- AVX2 + FMA -------------------------------------------------------------------------------------

#define TESSERA_AVX2 __attribute__((target("avx2,fma")))

// c[0:R, 0:O] from rows a[0:R] and b[0:O]. While it runs it prefetches the same columns of the `npf`
// rows at `next` (the next tile's rows of b), one cache line per row every 16 floats: decode's weights
// stream from DRAM, and a tile of 3 rows of b alone keeps too few misses in flight (see the file comment).
// kPrefetch is a template argument so that the cached path's loop is exactly the plain one (a run-time
// check in the loop slowed builtin:tiny's cache-resident products by up to 2x).
template <int R, int O, bool kPrefetch = false>
TESSERA_AVX2 inline void NtTile(int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                                int64_t ldb, float beta, float* c, int64_t ldc, const float* next = nullptr,
                                int npf = 0) {
  __m256 acc[R][O];
  for (int r = 0; r < R; ++r) {
    for (int o = 0; o < O; ++o) acc[r][o] = _mm256_setzero_ps();
  }
  int64_t p = 0;
  for (; p + 8 <= k; p += 8) {
    if constexpr (kPrefetch) {
      if ((p & 15) == 0) {
        for (int o = 0; o < npf; ++o) _mm_prefetch(reinterpret_cast<const char*>(next + o * ldb + p), _MM_HINT_T0);
      }
    }
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_loadu_ps(a + r * lda + p);
      for (int o = 0; o < O; ++o) {
        acc[r][o] = _mm256_fmadd_ps(av, _mm256_loadu_ps(b + o * ldb + p), acc[r][o]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int o = 0; o < O; ++o) {
      float s = HSum(acc[r][o]);
      for (int64_t q = p; q < k; ++q) s += a[r * lda + q] * b[o * ldb + q];
      float* cj = c + r * ldc + o;
      *cj = Finish(s, alpha, beta, cj);
    }
  }
}

// How many rows of the tile after the one at column j (of width O) exist, for NtTile's prefetch.
template <int O>
inline int NextTileRows(int64_t j, int64_t n) {
  return static_cast<int>(std::clamp<int64_t>(n - (j + O), 0, O));
}

template <int R, int O>
TESSERA_AVX2 void NtRows(int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                         int64_t ldb, float beta, float* c, int64_t ldc) {
  int64_t j = 0;
  for (; j + O <= n; j += O) NtTile<R, O>(k, alpha, a, lda, b + j * ldb, ldb, beta, c + j, ldc);
  for (; j < n; ++j) NtTile<R, 1>(k, alpha, a, lda, b + j * ldb, ldb, beta, c + j, ldc);
}

// b cached: tiles of 4 rows of a, then one of the rest.
TESSERA_AVX2 void NtAvx2Cached(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                               const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  int64_t r = 0;
  for (; r + 4 <= m; r += 4) NtRows<4, 3>(n, k, alpha, a + r * lda, lda, b, ldb, beta, c + r * ldc, ldc);
  switch (m - r) {
    case 3: NtRows<3, 4>(n, k, alpha, a + r * lda, lda, b, ldb, beta, c + r * ldc, ldc); break;
    case 2: NtRows<2, 6>(n, k, alpha, a + r * lda, lda, b, ldb, beta, c + r * ldc, ldc); break;
    case 1: NtRows<1, 8>(n, k, alpha, a + r * lda, lda, b, ldb, beta, c + r * ldc, ldc); break;
    default: break;
  }
}

// b streamed, 4 + R2 rows of a (R2 = 0 or 2..4): each 4 x 3 tile prefetches the next tile's rows of b,
// and with R2 > 0 the same 3 rows of b then serve rows 4.. while they are still in L1, so b streams from
// memory once and the second block's FMAs overlap that stream (one 4-row pass after another read b back
// from L2).
template <int R2>
TESSERA_AVX2 void NtRowsStreamed(int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const float* a2 = a + 4 * lda;
  float* c2 = c + 4 * ldc;
  int64_t j = 0;
  for (; j + 3 <= n; j += 3) {
    NtTile<4, 3, true>(k, alpha, a, lda, b + j * ldb, ldb, beta, c + j, ldc, b + (j + 3) * ldb,
                       NextTileRows<3>(j, n));
    if constexpr (R2 > 0) NtTile<R2, 3>(k, alpha, a2, lda, b + j * ldb, ldb, beta, c2 + j, ldc);
  }
  for (; j < n; ++j) {
    NtTile<4, 1>(k, alpha, a, lda, b + j * ldb, ldb, beta, c + j, ldc);
    if constexpr (R2 > 0) NtTile<R2, 1>(k, alpha, a2, lda, b + j * ldb, ldb, beta, c2 + j, ldc);
  }
}

// b streamed. Only the 4-row tiles prefetch: the 1 x 8 tile already keeps 8 streams in flight and read
// a 32000 x 1024 matrix slower with it (10.5 vs 13-14 GB/s on one Zen 3 core, 19 vs 24 on two); 2 x 6
// and 3 x 4 measured the same either way. 5 rows: 4 + 1 (a 1 x 3 tile would be FMA-latency bound).
TESSERA_AVX2 void NtAvx2Streamed(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  int64_t r = 0;
  for (; m - r > 8 || m - r == 4; r += 4) {
    NtRowsStreamed<0>(n, k, alpha, a + r * lda, lda, b, ldb, beta, c + r * ldc, ldc);
  }
  const float* ar = a + r * lda;
  float* cr = c + r * ldc;
  switch (m - r) {
    case 8: NtRowsStreamed<4>(n, k, alpha, ar, lda, b, ldb, beta, cr, ldc); break;
    case 7: NtRowsStreamed<3>(n, k, alpha, ar, lda, b, ldb, beta, cr, ldc); break;
    case 6: NtRowsStreamed<2>(n, k, alpha, ar, lda, b, ldb, beta, cr, ldc); break;
    case 5:
      NtRowsStreamed<0>(n, k, alpha, ar, lda, b, ldb, beta, cr, ldc);
      NtRows<1, 8>(n, k, alpha, ar + 4 * lda, lda, b, ldb, beta, cr + 4 * ldc, ldc);
      break;
    default: NtAvx2Cached(m - r, n, k, alpha, ar, lda, b, ldb, beta, cr, ldc); break;  // 1-3 rows
  }
}

// c[0:R, 0:8V] over all k.
template <int R, int V>
TESSERA_AVX2 inline void NnTile(int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                                int64_t ldb, float beta, float* c, int64_t ldc) {
  __m256 acc[R][V];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_ps();
  }
  for (int64_t p = 0; p < k; ++p) {
    const float* bp = b + p * ldb;
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * lda + p);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(av, _mm256_loadu_ps(bp + 8 * v), acc[r][v]);
    }
  }
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < V; ++v) {
      float* cv = c + r * ldc + 8 * v;
      __m256 out = _mm256_mul_ps(va, acc[r][v]);
      if (beta != 0.0f) out = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cv), out);
      _mm256_storeu_ps(cv, out);
    }
  }
}

// Fewer than 8 trailing columns: plain loops (each c element accumulates over k).
template <int R>
TESSERA_AVX2 void NnTail(int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                         int64_t ldb, float beta, float* c, int64_t ldc) {
  for (int r = 0; r < R; ++r) {
    for (int64_t j = 0; j < n; ++j) {
      float s = 0.0f;
      for (int64_t p = 0; p < k; ++p) s += a[r * lda + p] * b[p * ldb + j];
      float* cj = c + r * ldc + j;
      *cj = Finish(s, alpha, beta, cj);
    }
  }
}

template <int R, int V>
TESSERA_AVX2 void NnRows(int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                         int64_t ldb, float beta, float* c, int64_t ldc) {
  int64_t j = 0;
  for (; j + 8 * V <= n; j += 8 * V) NnTile<R, V>(k, alpha, a, lda, b + j, ldb, beta, c + j, ldc);
  for (; j + 8 <= n; j += 8) NnTile<R, 1>(k, alpha, a, lda, b + j, ldb, beta, c + j, ldc);
  if (j < n) NnTail<R>(n - j, k, alpha, a, lda, b + j, ldb, beta, c + j, ldc);
}

TESSERA_AVX2 void NnAvx2(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                         const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  int64_t r = 0;
  for (; r + 4 <= m; r += 4) NnRows<4, 3>(n, k, alpha, a + r * lda, lda, b, ldb, beta, c + r * ldc, ldc);
  switch (m - r) {
    case 3: NnRows<3, 4>(n, k, alpha, a + r * lda, lda, b, ldb, beta, c + r * ldc, ldc); break;
    case 2: NnRows<2, 6>(n, k, alpha, a + r * lda, lda, b, ldb, beta, c + r * ldc, ldc); break;
    case 1: NnRows<1, 8>(n, k, alpha, a + r * lda, lda, b, ldb, beta, c + r * ldc, ldc); break;
    default: break;
  }
}

#undef TESSERA_AVX2

// ---- AVX-512 (NT only: the forward/decode path) ---------------------------------------------------
// 16 lanes halve the FMAs of small, cache-resident products; the k tail is a masked load in the same
// loop. Tiles are R (1-3) rows x 8 outputs; the 8 accumulators of a row are reduced together by a
// transpose-add tree (~3 instructions per output instead of ~10 for separate horizontal sums, which
// matters at the tiny model's k = 96..192) into 8 contiguous outputs.

#define TESSERA_AVX512 __attribute__((target("avx512f,fma")))
// GCC 12's avx512fintrin.h trips -Wuninitialized on its own _mm512_undefined_* placeholders.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// c[0:R, 0:O] for O == 8 (joint reduction) or O == 1 (output tail).
template <int R, int O>
TESSERA_AVX512 inline void NtTile512(int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                                     int64_t ldb, float beta, float* c, int64_t ldc) {
  static_assert(O == 8 || O == 1);
  __m512 acc[R][O];
  for (int r = 0; r < R; ++r) {
    for (int o = 0; o < O; ++o) acc[r][o] = _mm512_setzero_ps();
  }
  // Full 16-lane steps, then one masked step (kept apart: a mask computed inside the loop made GCC
  // keep the accumulators in memory).
  int64_t p = 0;
  for (; p + 16 <= k; p += 16) {
    __m512 av[R];
    for (int r = 0; r < R; ++r) av[r] = _mm512_loadu_ps(a + r * lda + p);
    for (int o = 0; o < O; ++o) {
      const __m512 bv = _mm512_loadu_ps(b + o * ldb + p);
      for (int r = 0; r < R; ++r) acc[r][o] = _mm512_fmadd_ps(av[r], bv, acc[r][o]);
    }
  }
  if (p < k) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (k - p)) - 1u);
    __m512 av[R];
    for (int r = 0; r < R; ++r) av[r] = _mm512_maskz_loadu_ps(mask, a + r * lda + p);
    for (int o = 0; o < O; ++o) {
      const __m512 bv = _mm512_maskz_loadu_ps(mask, b + o * ldb + p);
      for (int r = 0; r < R; ++r) acc[r][o] = _mm512_fmadd_ps(av[r], bv, acc[r][o]);
    }
  }
  for (int r = 0; r < R; ++r) {
    float* cr = c + r * ldc;
    if constexpr (O == 8) {
      const __m256 sums = HSum8x512(acc[r][0], acc[r][1], acc[r][2], acc[r][3], acc[r][4], acc[r][5],
                                    acc[r][6], acc[r][7]);
      __m256 out = _mm256_mul_ps(_mm256_set1_ps(alpha), sums);
      if (beta != 0.0f) out = _mm256_fmadd_ps(_mm256_set1_ps(beta), _mm256_loadu_ps(cr), out);
      _mm256_storeu_ps(cr, out);
    } else {
      *cr = Finish(HSum512(acc[r][0]), alpha, beta, cr);
    }
  }
}

template <int R>
TESSERA_AVX512 void NtRows512(int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                              const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) NtTile512<R, 8>(k, alpha, a, lda, b + j * ldb, ldb, beta, c + j, ldc);
  for (; j < n; ++j) NtTile512<R, 1>(k, alpha, a, lda, b + j * ldb, ldb, beta, c + j, ldc);
}

// Rows in blocks of 3 (3 x 8 accumulators + 3 rows of a + 1 of b fit the 32 registers); 4 = 2 + 2.
TESSERA_AVX512 void NtAvx512(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                             const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  for (int64_t r = 0; r < m;) {
    const int64_t left = m - r;
    const int64_t rows = left == 4 ? 2 : std::min<int64_t>(left, 3);
    const float* ar = a + r * lda;
    float* cr = c + r * ldc;
    if (rows == 3) NtRows512<3>(n, k, alpha, ar, lda, b, ldb, beta, cr, ldc);
    else if (rows == 2) NtRows512<2>(n, k, alpha, ar, lda, b, ldb, beta, cr, ldc);
    else NtRows512<1>(n, k, alpha, ar, lda, b, ldb, beta, cr, ldc);
    r += rows;
  }
}

#pragma GCC diagnostic pop
#undef TESSERA_AVX512

}  // namespace

SmallGemmIsa SmallGemmBestIsa() {
  static const SmallGemmIsa isa = ChooseKernelSet(ProbeCpu()).small_gemm;
  return isa;
}

bool SmallGemmSupports(SmallGemmIsa isa) {
  return static_cast<int>(isa) <= static_cast<int>(SmallGemmBestIsa());
}

void SmallGemmNTWithIsa(SmallGemmIsa isa, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                        int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
                        SmallGemmB b_from) {
  switch (isa) {
    case SmallGemmIsa::kAvx512: NtAvx512(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc); break;
    case SmallGemmIsa::kAvx2:
      if (b_from == SmallGemmB::kStreamed) {
        NtAvx2Streamed(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
      } else {
        NtAvx2Cached(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
      }
      break;
    case SmallGemmIsa::kPortable: NtPortable(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc); break;
  }
}

void SmallGemmNNWithIsa(SmallGemmIsa isa, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                        int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (isa == SmallGemmIsa::kPortable) {
    NnPortable(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  } else {
    NnAvx2(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}

void SmallGemmNT(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                 int64_t ldb, float beta, float* c, int64_t ldc, SmallGemmB b_from) {
  SmallGemmNTWithIsa(SmallGemmBestIsa(), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, b_from);
}

void SmallGemmNN(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                 int64_t ldb, float beta, float* c, int64_t ldc) {
  SmallGemmNNWithIsa(SmallGemmBestIsa(), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace tessera::cpu
