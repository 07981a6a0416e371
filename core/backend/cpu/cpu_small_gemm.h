// Direct (pack-free) single-threaded GEMM kernels for matrices with few rows: decode steps and MoE
// expert groups of 1-8 tokens, where OpenBLAS's packing and per-call overhead dominate the useful work.
//
// Math (row-major; lda/ldb/ldc are row strides in floats):
//   SmallGemmNT: c[m,n] = alpha * a[m,k] @ b[n,k]^T + beta * c   (b in nn.Linear layout [out,in]:
//                each output is a contiguous dot product of a row of a and a row of b)
//   SmallGemmNN: c[m,n] = alpha * a[m,k] @ b[k,n]   + beta * c   (axpy-style: rows of b are streamed
//                once and accumulated into register tiles of c)
// BLAS beta semantics: beta == 0 means c is write-only (its prior contents, even NaN, are ignored).
// Register-tiled AVX-512 (NT) / AVX2+FMA code is chosen at run time by what the CPU has (the build sets
// no -march); otherwise a portable loop is used. Results differ from sgemm only by float summation
// order. Callers parallelize by splitting columns (pass b/c offset by j0).
#pragma once

#include <cstdint>

#include "core/backend/cpu/cpu_features.h"

namespace tessera::cpu {

// Where NT's b is expected to come from. kStreamed: a weight read once per call from memory (decode
// reads every weight once per step, and a real checkpoint is far larger than the last-level cache): the
// AVX2 kernel then prefetches the next tile's rows of b and reads b once for up to 8 rows. kCached: b is
// reused from cache (small weights), where those prefetches cost 15-30% (see cpu_small_gemm.cc). The
// portable and AVX-512 kernels take the same path either way.
enum class SmallGemmB { kCached, kStreamed };

// kStreamed for b of n x k elements of `elem_bytes` each when it is at least 1 MiB (twice a Zen 3 core's
// L2; builtin:tiny's largest weight is 0.2 MB, a real checkpoint's smallest expert several MB), else
// kCached. A size rule cannot see a large weight that happens to be cache-resident (a model that fits
// in L3); there the prefetches cost what the comment above says.
inline SmallGemmB SmallGemmBFor(int64_t n, int64_t k, int64_t elem_bytes) {
  return n * k * elem_bytes >= (int64_t{1} << 20) ? SmallGemmB::kStreamed : SmallGemmB::kCached;
}

void SmallGemmNT(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
                 SmallGemmB b_from = SmallGemmB::kCached);
void SmallGemmNN(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// Instruction set of the kernels (SmallGemmIsa, cpu_features.h): the CPU's best one, chosen once at
// first use by ChooseKernelSet from the probed features; NN has no AVX-512 variant (it uses AVX2 there).
SmallGemmIsa SmallGemmBestIsa();
bool SmallGemmSupports(SmallGemmIsa isa);

// The same products with the kernels of `isa` (which this CPU must support): lets tests check every
// variant the machine can run, not just the one dispatch picks.
void SmallGemmNTWithIsa(SmallGemmIsa isa, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                        int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
                        SmallGemmB b_from = SmallGemmB::kCached);
void SmallGemmNNWithIsa(SmallGemmIsa isa, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                        int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace tessera::cpu
