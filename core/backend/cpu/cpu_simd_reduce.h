// Shared SIMD helpers of the CPU backend's kernels (cpu_small_gemm.cc, cpu_bf16_gemm.cc,
// cpu_attention_rows.cc): bf16 widening and horizontal sums. Each function
// carries its own target attribute, so including this header enables no instruction set elsewhere; call
// them only from code compiled for (or dispatched to) that ISA.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace tessera::cpu::simd {

#define TESSERA_SIMD_AVX2 __attribute__((target("avx2,fma")))
#define TESSERA_SIMD_AVX512 __attribute__((target("avx512f,fma")))
// GCC 12's avx512fintrin.h trips -Wuninitialized on its own _mm512_undefined_* placeholders.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// 8 bf16 -> 8 f32, exactly: zero-extend each to 32 bits and shift it into the high half.
TESSERA_SIMD_AVX2 inline __m256 Bf16x8ToF32(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

TESSERA_SIMD_AVX2 inline float HSum(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  __m128 sh = _mm_movehdup_ps(lo);
  __m128 s = _mm_add_ps(lo, sh);
  sh = _mm_movehl_ps(sh, s);
  return _mm_cvtss_f32(_mm_add_ss(s, sh));
}

// Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3].
TESSERA_SIMD_AVX512 inline __m512 PairSum(__m512 a, __m512 b) {
  return _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
}

// From PairSum(a, b) and PairSum(c, d): per 128-bit lane, [a, b, c, d] partial sums.
TESSERA_SIMD_AVX512 inline __m512 QuadSum(__m512 ab, __m512 cd) {
  const __m512d x = _mm512_castps_pd(ab), y = _mm512_castps_pd(cd);
  return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
}

// Sums of each of v0..v7 (16 lanes each), as 8 floats. (By value: taking the accumulators' address
// would make GCC keep them in memory inside the k loop.)
TESSERA_SIMD_AVX512 inline __m256 HSum8x512(__m512 v0, __m512 v1, __m512 v2, __m512 v3, __m512 v4, __m512 v5,
                                      __m512 v6, __m512 v7) {
  const __m512 q0 = QuadSum(PairSum(v0, v1), PairSum(v2, v3));
  const __m512 q1 = QuadSum(PairSum(v4, v5), PairSum(v6, v7));
  // Lanes: [q0.L0+q0.L2, q0.L1+q0.L3, q1.L0+q1.L2, q1.L1+q1.L3].
  const __m512 z = _mm512_add_ps(_mm512_shuffle_f32x4(q0, q1, _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm512_shuffle_f32x4(q0, q1, _MM_SHUFFLE(3, 2, 3, 2)));
  // Lane 0: outputs 0-3, lane 2: outputs 4-7.
  const __m512 t = _mm512_add_ps(z, _mm512_shuffle_f32x4(z, z, _MM_SHUFFLE(2, 3, 0, 1)));
  const __m512 packed = _mm512_shuffle_f32x4(t, t, _MM_SHUFFLE(2, 0, 2, 0));
  return _mm512_castps512_ps256(packed);
}

TESSERA_SIMD_AVX512 inline float HSum512(__m512 v) {
  const __m512 t = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  return HSum(_mm512_castps512_ps256(t));
}

#pragma GCC diagnostic pop
#undef TESSERA_SIMD_AVX2
#undef TESSERA_SIMD_AVX512

}  // namespace tessera::cpu::simd
