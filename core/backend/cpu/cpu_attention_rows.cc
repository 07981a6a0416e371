// Per-row attention inner loops (see cpu_attention_rows.h for the math and the variants).
#include "core/backend/cpu/cpu_attention_rows.h"

#include <immintrin.h>

#include "core/backend/cpu/cpu_kernels.h"
#include "core/backend/cpu/cpu_simd_reduce.h"

namespace tessera::cpu {
namespace {

// ---- Portable ---------------------------------------------------------------------------------------

template <typename T>
float PortableDot(const float* q, const T* k, int64_t hd) {
  if constexpr (sizeof(T) == 2) {
    return DotBf16(q, k, hd);
  } else {
    return Dot(q, k, hd);
  }
}

template <typename T>
void DotRowsPortable(const float* q, const T* k, int64_t stride, int64_t n, int64_t hd, float scale, float* s) {
  for (int64_t r = 0; r < n; ++r) s[r] = scale * PortableDot(q, k + r * stride, hd);
}

template <typename T>
void AxpyRowsPortable(const float* w, const T* v, int64_t stride, int64_t n, int64_t hd, float* acc) {
  for (int64_t r = 0; r < n; ++r) {
    if constexpr (sizeof(T) == 2) {
      AxpyRowBf16(w[r], v + r * stride, acc, hd);
    } else {
      AxpyRow(w[r], v + r * stride, acc, hd);
    }
  }
}

// ---- AVX2 + FMA -------------------------------------------------------------------------------------

#define TESSERA_AVX2 __attribute__((target("avx2,fma")))

TESSERA_AVX2 inline __m256 Load8(const float* p) { return _mm256_loadu_ps(p); }
TESSERA_AVX2 inline __m256 Load8(const uint16_t* p) { return simd::Bf16x8ToF32(p); }
inline float Load1(const float* p) { return *p; }
inline float Load1(const uint16_t* p) { return Bf16ToF32(*p); }

template <typename T>
TESSERA_AVX2 void DotRowsAvx2(const float* q, const T* k, int64_t stride, int64_t n, int64_t hd, float scale,
                              float* s) {
  for (int64_t r = 0; r < n; ++r) {
    const T* kr = k + r * stride;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t d = 0;
    for (; d + 16 <= hd; d += 16) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), Load8(kr + d), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d + 8), Load8(kr + d + 8), a1);
    }
    for (; d + 8 <= hd; d += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), Load8(kr + d), a0);
    float dot = simd::HSum(_mm256_add_ps(a0, a1));
    for (; d < hd; ++d) dot = __builtin_fmaf(q[d], Load1(kr + d), dot);
    s[r] = scale * dot;
  }
}

// acc[d0 : d0 + 8W] += sum_r w[r] v_r[d0 : d0 + 8W], the W accumulators in registers for the whole run.
template <int W, typename T>
TESSERA_AVX2 inline void AxpyChunkAvx2(const float* w, const T* v, int64_t stride, int64_t n, float* acc) {
  __m256 a[W];
  for (int i = 0; i < W; ++i) a[i] = _mm256_loadu_ps(acc + 8 * i);
  for (int64_t r = 0; r < n; ++r) {
    const __m256 wr = _mm256_set1_ps(w[r]);
    const T* vr = v + r * stride;
    for (int i = 0; i < W; ++i) a[i] = _mm256_fmadd_ps(wr, Load8(vr + 8 * i), a[i]);
  }
  for (int i = 0; i < W; ++i) _mm256_storeu_ps(acc + 8 * i, a[i]);
}

template <typename T>
TESSERA_AVX2 void AxpyRowsAvx2(const float* w, const T* v, int64_t stride, int64_t n, int64_t hd, float* acc) {
  int64_t d = 0;
  for (; d + 64 <= hd; d += 64) AxpyChunkAvx2<8>(w, v + d, stride, n, acc + d);
  for (; d + 8 <= hd; d += 8) AxpyChunkAvx2<1>(w, v + d, stride, n, acc + d);
  // The last hd % 8 elements: explicit fused multiply-adds, so every element's result is the chain
  // fma(w[r], v_r, acc) in r order however GCC compiles the loop, and a run split in two (a paged block
  // boundary) gives the same bits as one run (left as `x += w * v`, GCC contracted it differently in two
  // copies of the loop, and paged decode stopped matching contiguous caches bit for bit).
  for (; d < hd; ++d) {
    float x = acc[d];
    for (int64_t r = 0; r < n; ++r) x = __builtin_fmaf(w[r], Load1(v + r * stride + d), x);
    acc[d] = x;
  }
}

#undef TESSERA_AVX2

template <typename T>
void DotRowsAny(SmallGemmIsa isa, const float* q, const T* k, int64_t stride, int64_t n, int64_t hd, float scale,
                float* s) {
  if (isa == SmallGemmIsa::kPortable) {
    DotRowsPortable(q, k, stride, n, hd, scale, s);
  } else {
    DotRowsAvx2(q, k, stride, n, hd, scale, s);
  }
}

template <typename T>
void AxpyRowsAny(SmallGemmIsa isa, const float* w, const T* v, int64_t stride, int64_t n, int64_t hd, float* acc) {
  if (isa == SmallGemmIsa::kPortable) {
    AxpyRowsPortable(w, v, stride, n, hd, acc);
  } else {
    AxpyRowsAvx2(w, v, stride, n, hd, acc);
  }
}

}  // namespace

void AttnDotRows(SmallGemmIsa isa, const float* q, const float* k, int64_t stride, int64_t n, int64_t hd,
                 float scale, float* s) {
  DotRowsAny(isa, q, k, stride, n, hd, scale, s);
}
void AttnDotRows(SmallGemmIsa isa, const float* q, const uint16_t* k, int64_t stride, int64_t n, int64_t hd,
                 float scale, float* s) {
  DotRowsAny(isa, q, k, stride, n, hd, scale, s);
}
void AttnAxpyRows(SmallGemmIsa isa, const float* w, const float* v, int64_t stride, int64_t n, int64_t hd,
                  float* acc) {
  AxpyRowsAny(isa, w, v, stride, n, hd, acc);
}
void AttnAxpyRows(SmallGemmIsa isa, const float* w, const uint16_t* v, int64_t stride, int64_t n, int64_t hd,
                  float* acc) {
  AxpyRowsAny(isa, w, v, stride, n, hd, acc);
}

}  // namespace tessera::cpu
