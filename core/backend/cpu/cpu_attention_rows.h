// The inner loops of the per-row (decode) attention kernel (cpu_attention.cc): one query row of one head
// against a run of key/value rows stored `stride` elements apart (a paged block, or the whole history).
//
// Math (hd elements per row; k_r = k + r * stride, likewise v_r; r < n):
//   AttnDotRows:  s[r] = scale * (q . k_r)
//   AttnAxpyRows: acc[0:hd] += sum_r w[r] * v_r        (r in order)
// Keys and values are f32 or bf16 (widened exactly as they are read).
//
// Variants (SmallGemmIsa, the kernel set's small_gemm choice; kAvx512 runs the AVX2 code): kPortable
// (the `omp simd` loops of cpu_kernels.h) and kAvx2 (AVX2 + FMA). The AVX2 AxpyRows keeps up to 64
// elements of acc in registers across the whole run: the portable loop loaded and stored acc once per
// row, a store-to-load chain that made a batch-8 f32 decode step's attention 10% of the step on Zen 3.
// The file is compiled without -march; the AVX2 code carries its target attribute and runs only where
// the CPU has the features (SmallGemmSupports: these loops follow the small-GEMM kernels' choice,
// SmallGemmBestIsa).
#pragma once

#include <cstdint>

#include "core/backend/cpu/cpu_features.h"

namespace tessera::cpu {

void AttnDotRows(SmallGemmIsa isa, const float* q, const float* k, int64_t stride, int64_t n, int64_t hd,
                 float scale, float* s);
void AttnDotRows(SmallGemmIsa isa, const float* q, const uint16_t* k, int64_t stride, int64_t n, int64_t hd,
                 float scale, float* s);
void AttnAxpyRows(SmallGemmIsa isa, const float* w, const float* v, int64_t stride, int64_t n, int64_t hd,
                  float* acc);
void AttnAxpyRows(SmallGemmIsa isa, const float* w, const uint16_t* v, int64_t stride, int64_t n, int64_t hd,
                  float* acc);

}  // namespace tessera::cpu
