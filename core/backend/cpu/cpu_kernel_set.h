// What the CPU backend runs on this machine, for logs and GetRuntimeStatus (see cpu_features.h for the
// probe and the choice, cpu_blas.h for how the BLAS is loaded). Kept apart from cpu_blas.h so callers
// need no BLAS headers.
#pragma once

#include <string>

namespace tessera::cpu {

// The CPU's features, e.g. "GenuineIntel family 6 model 167 'Intel(R) Xeon(R) Processor': sse3 avx avx2 ...".
std::string CpuFeaturesString();
// The kernels chosen for it, e.g. "blas=openblas:Cooperlake small_gemm=avx512 bf16_gemm=avx512_bf16"; a BLAS
// core other than the features' reads "blas=openblas:Prescott(DEGRADED: wanted Cooperlake; ...)". Loads
// the BLAS if nothing has yet.
std::string CpuKernelSetString();

}  // namespace tessera::cpu
