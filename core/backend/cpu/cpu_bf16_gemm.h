// bf16-weight GEMM for few rows (decode steps, MoE expert groups of 1-8 tokens): the memory-bound path of a
// bf16 model on the CPU, reading the weights in bf16 (half the bytes of f32) instead of widening a copy of
// every weight on every call (cpu_narrow_storage.h's reference path).
//
// Math (row-major, strides in elements):
//   Bf16GemmNT: c[m,n] = alpha * a[m,k] @ b[n,k]^T + beta * c    (b: bf16, nn.Linear layout [out,in]; c: f32;
//               beta == 0: c is write-only)
// Numerics: every product is exact in f32 (bf16 x bf16, or bf16 x f32 widened), summed in f32: the same
// contract as the widened reference (widen on load, fp32 math) up to summation order. The AVX512_BF16
// variant (vdpbf16ps) needs a in bf16 (a_bf16) and, like the instruction, treats denormal inputs and
// results as zero; the others read a in f32 (a_f32: the caller widens the few rows of a once).
//
// Variants (Bf16GemmIsa, chosen by ChooseKernelSet from cpuid): kAvx512Bf16 (vdpbf16ps, 32 bf16 pairs per
// instruction), kAvx512 (bf16 -> f32 by a 16-bit shift, 16-lane FMA), kAvx2 (8 lanes), kPortable. The
// file is compiled without -march: each variant carries its target attribute and runs only where the
// CPU reports the features (Bf16GemmSupports), so the binary runs on any x86-64.
#pragma once

#include <cstdint>

#include "core/backend/cpu/cpu_features.h"

namespace tessera::cpu {

Bf16GemmIsa Bf16GemmBestIsa();          // ChooseKernelSet(ProbeCpu()).bf16_gemm
bool Bf16GemmSupports(Bf16GemmIsa isa);  // isa <= the best one

// a_f32 is required unless isa == kAvx512Bf16; a_bf16 is required when isa == kAvx512Bf16 (pass both when
// available). Single-threaded; callers split n (offset b and c by j0).
void Bf16GemmNT(Bf16GemmIsa isa, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* a_bf16,
                const float* a_f32, int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c,
                int64_t ldc);

}  // namespace tessera::cpu
