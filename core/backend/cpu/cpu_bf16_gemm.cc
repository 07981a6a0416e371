// bf16-weight small-M GEMM kernels (see cpu_bf16_gemm.h for the math and the variants).
//
// Tiling (AVX-512 variants): R (1-3) rows of a times 8 rows of b keep R x 8 accumulators (+ R rows of a
// + 1 of b <= 32 zmm registers); each b row is read once per R-row block, and the 8 accumulators of a row
// are reduced together into 8 contiguous outputs (simd::HSum8x512). The k tail is a masked load in the
// same loop shape. AVX2: one b row at a time against R (1-4) rows of a (NtRowDot2: why).
#include "core/backend/cpu/cpu_bf16_gemm.h"

#include <immintrin.h>

#include <algorithm>

#include "core/backend/cpu/cpu_simd_reduce.h"
#include "core/tensor/tensor.h"

namespace tessera::cpu {
namespace {

inline float Finish(float acc, float alpha, float beta, const float* c) {
  return beta == 0.0f ? alpha * acc : alpha * acc + beta * *c;
}

// ---- Portable ---------------------------------------------------------------------------------------

void NtPortable(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const uint16_t* b,
                int64_t ldb, float beta, float* c, int64_t ldc) {
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t j = 0; j < n; ++j) {
      float s = 0.0f;
      for (int64_t p = 0; p < k; ++p) s += a[r * lda + p] * Bf16ToF32(b[j * ldb + p]);
      float* cj = c + r * ldc + j;
      *cj = Finish(s, alpha, beta, cj);
    }
  }
}

// ---- AVX2 + FMA: widen 8 bf16 to f32 (zero-extend to 32 bits, shift left 16) ------------------------

#define TESSERA_AVX2 __attribute__((target("avx2,fma")))

using simd::Bf16x8ToF32;

// One row of b (one output column) against R rows of a, U accumulators per row along k. The kernel
// streams b one row at a time, as a dot product: on Zen 3 (2 threads, weights from DRAM) that read 9-12
// GB/s of bf16 against 5.5-10.7 for the tile of 6-8 b rows at once that the f32 kernel uses (there the
// tile wins: 12-19 vs 6-13 GB/s of f32). The measurements are in ops/bench/RESULTS.md.
template <int R, int U>
TESSERA_AVX2 inline void NtRowDot2(int64_t k, float alpha, const float* a, int64_t lda, const uint16_t* b,
                                   float beta, float* c, int64_t ldc) {
  __m256 acc[R][U];
  for (int r = 0; r < R; ++r) {
    for (int u = 0; u < U; ++u) acc[r][u] = _mm256_setzero_ps();
  }
  int64_t p = 0;
  for (; p + 8 * U <= k; p += 8 * U) {
    for (int u = 0; u < U; ++u) {
      const __m256 bv = Bf16x8ToF32(b + p + 8 * u);
      for (int r = 0; r < R; ++r) acc[r][u] = _mm256_fmadd_ps(_mm256_loadu_ps(a + r * lda + p + 8 * u), bv, acc[r][u]);
    }
  }
  for (; p + 8 <= k; p += 8) {
    const __m256 bv = Bf16x8ToF32(b + p);
    for (int r = 0; r < R; ++r) acc[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(a + r * lda + p), bv, acc[r][0]);
  }
  for (int r = 0; r < R; ++r) {
    __m256 sum = acc[r][0];
    for (int u = 1; u < U; ++u) sum = _mm256_add_ps(sum, acc[r][u]);
    float s = simd::HSum(sum);
    for (int64_t q = p; q < k; ++q) s += a[r * lda + q] * Bf16ToF32(b[q]);
    float* cj = c + r * ldc;
    *cj = Finish(s, alpha, beta, cj);
  }
}

// Columns outermost: each b row is read from memory once and stays in L1 for the row blocks after the
// first (4 rows x 2 accumulators, then 3 x 2, 2 x 4 or 1 x 4).
TESSERA_AVX2 void NtAvx2(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                         const uint16_t* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  for (int64_t j = 0; j < n; ++j) {
    const uint16_t* bj = b + j * ldb;
    int64_t r = 0;
    for (; r + 4 <= m; r += 4) NtRowDot2<4, 2>(k, alpha, a + r * lda, lda, bj, beta, c + r * ldc + j, ldc);
    switch (m - r) {
      case 3: NtRowDot2<3, 2>(k, alpha, a + r * lda, lda, bj, beta, c + r * ldc + j, ldc); break;
      case 2: NtRowDot2<2, 4>(k, alpha, a + r * lda, lda, bj, beta, c + r * ldc + j, ldc); break;
      case 1: NtRowDot2<1, 4>(k, alpha, a + r * lda, lda, bj, beta, c + r * ldc + j, ldc); break;
      default: break;
    }
  }
}

#undef TESSERA_AVX2

// ---- AVX-512 ----------------------------------------------------------------------------------------

#define TESSERA_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,fma")))
#define TESSERA_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma")))
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// Writes the R x O tile's sums (O == 8: jointly reduced; O == 1: one output).
template <int R, int O>
TESSERA_AVX512 inline void Store512(__m512 (&acc)[R][O], float alpha, float beta, float* c, int64_t ldc) {
  for (int r = 0; r < R; ++r) {
    float* cr = c + r * ldc;
    if constexpr (O == 8) {
      const __m256 sums = simd::HSum8x512(acc[r][0], acc[r][1], acc[r][2], acc[r][3], acc[r][4], acc[r][5],
                                          acc[r][6], acc[r][7]);
      __m256 out = _mm256_mul_ps(_mm256_set1_ps(alpha), sums);
      if (beta != 0.0f) out = _mm256_fmadd_ps(_mm256_set1_ps(beta), _mm256_loadu_ps(cr), out);
      _mm256_storeu_ps(cr, out);
    } else {
      *cr = Finish(simd::HSum512(acc[r][0]), alpha, beta, cr);
    }
  }
}

// 16 bf16 -> 16 f32 (masked: absent lanes are 0).
TESSERA_AVX512 inline __m512 Load16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
TESSERA_AVX512 inline __m512 Load16(const uint16_t* p, __mmask16 mask) {
  const __m256i h = _mm256_maskz_loadu_epi16(mask, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

template <int R, int O>
TESSERA_AVX512 inline void NtTile512(int64_t k, float alpha, const float* a, int64_t lda, const uint16_t* b,
                                     int64_t ldb, float beta, float* c, int64_t ldc) {
  static_assert(O == 8 || O == 1);
  __m512 acc[R][O];
  for (int r = 0; r < R; ++r) {
    for (int o = 0; o < O; ++o) acc[r][o] = _mm512_setzero_ps();
  }
  int64_t p = 0;
  for (; p + 16 <= k; p += 16) {
    __m512 av[R];
    for (int r = 0; r < R; ++r) av[r] = _mm512_loadu_ps(a + r * lda + p);
    for (int o = 0; o < O; ++o) {
      const __m512 bv = Load16(b + o * ldb + p);
      for (int r = 0; r < R; ++r) acc[r][o] = _mm512_fmadd_ps(av[r], bv, acc[r][o]);
    }
  }
  if (p < k) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (k - p)) - 1u);
    __m512 av[R];
    for (int r = 0; r < R; ++r) av[r] = _mm512_maskz_loadu_ps(mask, a + r * lda + p);
    for (int o = 0; o < O; ++o) {
      const __m512 bv = Load16(b + o * ldb + p, mask);
      for (int r = 0; r < R; ++r) acc[r][o] = _mm512_fmadd_ps(av[r], bv, acc[r][o]);
    }
  }
  Store512<R, O>(acc, alpha, beta, c, ldc);
}

// vdpbf16ps: acc[i] += a[2i] b[2i] + a[2i+1] b[2i+1] over 32 bf16 per register.
template <int R, int O>
TESSERA_AVX512BF16 inline void NtTileBf16(int64_t k, float alpha, const uint16_t* a, int64_t lda,
                                          const uint16_t* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  static_assert(O == 8 || O == 1);
  __m512 acc[R][O];
  for (int r = 0; r < R; ++r) {
    for (int o = 0; o < O; ++o) acc[r][o] = _mm512_setzero_ps();
  }
  int64_t p = 0;
  for (; p + 32 <= k; p += 32) {
    __m512i av[R];
    for (int r = 0; r < R; ++r) av[r] = _mm512_loadu_si512(a + r * lda + p);
    for (int o = 0; o < O; ++o) {
      const __m512i bv = _mm512_loadu_si512(b + o * ldb + p);
      for (int r = 0; r < R; ++r) {
        acc[r][o] = _mm512_dpbf16_ps(acc[r][o], (__m512bh)av[r], (__m512bh)bv);
      }
    }
  }
  if (p < k) {  // absent elements load as +0.0 and add nothing
    const __mmask32 mask = static_cast<__mmask32>((k - p) >= 32 ? ~0u : (1u << (k - p)) - 1u);
    __m512i av[R];
    for (int r = 0; r < R; ++r) av[r] = _mm512_maskz_loadu_epi16(mask, a + r * lda + p);
    for (int o = 0; o < O; ++o) {
      const __m512i bv = _mm512_maskz_loadu_epi16(mask, b + o * ldb + p);
      for (int r = 0; r < R; ++r) {
        acc[r][o] = _mm512_dpbf16_ps(acc[r][o], (__m512bh)av[r], (__m512bh)bv);
      }
    }
  }
  Store512<R, O>(acc, alpha, beta, c, ldc);
}

// The row/column drivers of both AVX-512 variants, each with its own target (only the vdpbf16ps one may
// be compiled for AVX512_BF16). TILE is NtTile512 (a: f32) or NtTileBf16 (a: bf16).
#define TESSERA_NT512_DRIVER(NAME, TARGET, TILE, AT)                                                         \
  template <int R>                                                                                        \
  TARGET void NAME##Rows(int64_t n, int64_t k, float alpha, const AT* a, int64_t lda, const uint16_t* b,  \
                         int64_t ldb, float beta, float* c, int64_t ldc) {                                \
    int64_t j = 0;                                                                                        \
    for (; j + 8 <= n; j += 8) TILE<R, 8>(k, alpha, a, lda, b + j * ldb, ldb, beta, c + j, ldc);          \
    for (; j < n; ++j) TILE<R, 1>(k, alpha, a, lda, b + j * ldb, ldb, beta, c + j, ldc);                 \
  }                                                                                                       \
  /* Rows in blocks of 3; 4 = 2 + 2 (as cpu_small_gemm.cc). */                                            \
  TARGET void NAME(int64_t m, int64_t n, int64_t k, float alpha, const AT* a, int64_t lda, const uint16_t* b, \
                   int64_t ldb, float beta, float* c, int64_t ldc) {                                      \
    for (int64_t r = 0; r < m;) {                                                                         \
      const int64_t left = m - r;                                                                         \
      const int64_t rows = left == 4 ? 2 : std::min<int64_t>(left, 3);                                    \
      if (rows == 3) NAME##Rows<3>(n, k, alpha, a + r * lda, lda, b, ldb, beta, c + r * ldc, ldc);        \
      else if (rows == 2) NAME##Rows<2>(n, k, alpha, a + r * lda, lda, b, ldb, beta, c + r * ldc, ldc);   \
      else NAME##Rows<1>(n, k, alpha, a + r * lda, lda, b, ldb, beta, c + r * ldc, ldc);                  \
      r += rows;                                                                                          \
    }                                                                                                     \
  }

TESSERA_NT512_DRIVER(NtAvx512, TESSERA_AVX512, NtTile512, float)
TESSERA_NT512_DRIVER(NtAvx512Bf16, TESSERA_AVX512BF16, NtTileBf16, uint16_t)
#undef TESSERA_NT512_DRIVER

#pragma GCC diagnostic pop
#undef TESSERA_AVX512
#undef TESSERA_AVX512BF16

}  // namespace

Bf16GemmIsa Bf16GemmBestIsa() {
  static const Bf16GemmIsa isa = ChooseKernelSet(ProbeCpu()).bf16_gemm;
  return isa;
}

bool Bf16GemmSupports(Bf16GemmIsa isa) { return static_cast<int>(isa) <= static_cast<int>(Bf16GemmBestIsa()); }

void Bf16GemmNT(Bf16GemmIsa isa, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* a_bf16,
                const float* a_f32, int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c,
                int64_t ldc) {
  switch (isa) {
    case Bf16GemmIsa::kAvx512Bf16: NtAvx512Bf16(m, n, k, alpha, a_bf16, lda, b, ldb, beta, c, ldc); break;
    case Bf16GemmIsa::kAvx512: NtAvx512(m, n, k, alpha, a_f32, lda, b, ldb, beta, c, ldc); break;
    case Bf16GemmIsa::kAvx2: NtAvx2(m, n, k, alpha, a_f32, lda, b, ldb, beta, c, ldc); break;
    case Bf16GemmIsa::kPortable: NtPortable(m, n, k, alpha, a_f32, lda, b, ldb, beta, c, ldc); break;
  }
}

}  // namespace tessera::cpu
