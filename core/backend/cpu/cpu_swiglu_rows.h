// The element loops of the CPU backend's SwiGLU forward and backward (cpu_elementwise.cc), over n
// contiguous elements.
//
// Math (s = sigmoid(g) = 1 / (1 + exp(-g))):
//   SwiGluRows:         out = g * s * u
//   SwiGluBackwardRows: dgate = dout * u * s * (1 + g * (1 - s)),  dup = dout * g * s
// The backward reads each element's inputs before writing it, so dgate/dup may alias gate/up.
//
// Variants (SmallGemmIsa; dispatch and tests use the small-GEMM kernels' choice, SmallGemmBestIsa /
// SmallGemmSupports in cpu_small_gemm.h; kAvx512 runs the AVX2 code): kPortable
// (scalar loops over std::exp: the reference) and kAvx2 (8 elements at a time with a polynomial exp,
// Cephes' expf: range reduction by ln 2 and a degree-5 polynomial, within a few ulp of expf, overflowing
// and underflowing where expf does). The portable loop calls libm's expf once per element, which GCC cannot
// vectorize without -ffast-math: SwiGLU and expf were 10% of a builtin:tiny fine-tuning run on Zen 3.
// Saturated gates give sigmoid exactly 0 or 1, and NaN and +-inf give what the portable loop gives.
// The file is compiled without -march; the AVX2 code carries its target attribute and runs only where
// the CPU has the features (SmallGemmSupports).
#pragma once

#include <cstdint>

#include "core/backend/cpu/cpu_features.h"

namespace tessera::cpu {

void SwiGluRows(SmallGemmIsa isa, const float* g, const float* u, float* out, int64_t n);
void SwiGluBackwardRows(SmallGemmIsa isa, const float* g, const float* u, const float* dout, float* dgate,
                        float* dup, int64_t n);

}  // namespace tessera::cpu
