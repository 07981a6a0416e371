// SwiGLU element loops: a portable reference and an AVX2 variant (see cpu_swiglu_rows.h).
#include "core/backend/cpu/cpu_swiglu_rows.h"

#include <immintrin.h>

#include <cmath>

namespace tessera::cpu {
namespace {

inline float Sigmoid(float g) { return 1.0f / (1.0f + std::exp(-g)); }

void ForwardPortable(const float* g, const float* u, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] * Sigmoid(g[i]) * u[i];
}

void BackwardPortable(const float* g, const float* u, const float* d, float* dg, float* du, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i], ui = u[i], di = d[i];  // read first: dg/du may alias g/u
    const float sg = Sigmoid(gi);
    dg[i] = di * ui * sg * (1.0f + gi * (1.0f - sg));
    du[i] = di * gi * sg;
  }
}

#define TESSERA_AVX2 __attribute__((target("avx2,fma")))

// exp(x), 8 lanes (Cephes expf): x = k ln2 + r with |r| <= ln2 / 2 (ln2 split in two constants so
// k * ln2 is exact enough), e^r = 1 + r + r^2 P(r), times 2^k. 2^k is applied as two factors 2^k1 * 2^k2
// (k1 = floor(k / 2), each a normal float for k in [-150, 128]), so the result overflows to +inf past
// ln(FLT_MAX) and underflows gradually to 0 as expf does, and sigmoid saturates to exactly 0 and 1 like
// the portable loop. The clamp to [-104, 89] only bounds k; max/min take x as their second operand, which
// they return when x is NaN.
TESSERA_AVX2 inline __m256 Exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(89.0f), x);
  x = _mm256_max_ps(_mm256_set1_ps(-104.0f), x);
  const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 y = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r), _mm256_set1_ps(1.0f));
  const __m256i ki = _mm256_cvtps_epi32(k);
  const __m256i k1 = _mm256_srai_epi32(ki, 1), k2 = _mm256_sub_epi32(ki, k1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, bias), 23));
  return _mm256_mul_ps(_mm256_mul_ps(y, s1), s2);
}

TESSERA_AVX2 inline __m256 Sigmoid8(__m256 g) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, Exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
}

TESSERA_AVX2 void ForwardAvx2(const float* g, const float* u, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gi = _mm256_loadu_ps(g + i);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(gi, Sigmoid8(gi)), _mm256_loadu_ps(u + i)));
  }
  if (i < n) {  // the last n % 8 through the same vector code, so no element's bits depend on where a call
                // or a ParallelFor chunk starts (paged and batched decode match their references bit for bit)
    alignas(32) float tg[8] = {}, tu[8] = {}, to[8];
    for (int64_t j = 0; i + j < n; ++j) tg[j] = g[i + j], tu[j] = u[i + j];
    ForwardAvx2(tg, tu, to, 8);
    for (int64_t j = 0; i + j < n; ++j) out[i + j] = to[j];
  }
}

TESSERA_AVX2 void BackwardAvx2(const float* g, const float* u, const float* d, float* dg, float* du, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gi = _mm256_loadu_ps(g + i), ui = _mm256_loadu_ps(u + i), di = _mm256_loadu_ps(d + i);
    const __m256 sg = Sigmoid8(gi);
    const __m256 ds = _mm256_mul_ps(di, sg);
    // dgate = dout * u * s * (1 + g * (1 - s)); dup = dout * g * s
    const __m256 inner = _mm256_add_ps(one, _mm256_mul_ps(gi, _mm256_sub_ps(one, sg)));
    _mm256_storeu_ps(dg + i, _mm256_mul_ps(_mm256_mul_ps(ds, ui), inner));
    _mm256_storeu_ps(du + i, _mm256_mul_ps(ds, gi));
  }
  if (i < n) {  // the tail through the same vector code, as in ForwardAvx2
    alignas(32) float tg[8] = {}, tu[8] = {}, td[8] = {}, tdg[8], tdu[8];
    for (int64_t j = 0; i + j < n; ++j) tg[j] = g[i + j], tu[j] = u[i + j], td[j] = d[i + j];
    BackwardAvx2(tg, tu, td, tdg, tdu, 8);
    for (int64_t j = 0; i + j < n; ++j) dg[i + j] = tdg[j], du[i + j] = tdu[j];
  }
}

#undef TESSERA_AVX2

}  // namespace

void SwiGluRows(SmallGemmIsa isa, const float* g, const float* u, float* out, int64_t n) {
  if (isa == SmallGemmIsa::kPortable) {
    ForwardPortable(g, u, out, n);
  } else {
    ForwardAvx2(g, u, out, n);
  }
}

void SwiGluBackwardRows(SmallGemmIsa isa, const float* g, const float* u, const float* dout, float* dgate,
                        float* dup, int64_t n) {
  if (isa == SmallGemmIsa::kPortable) {
    BackwardPortable(g, u, dout, dgate, dup, n);
  } else {
    BackwardAvx2(g, u, dout, dgate, dup, n);
  }
}

}  // namespace tessera::cpu
