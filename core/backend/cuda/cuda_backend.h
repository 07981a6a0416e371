// CUDA-specific controls of the CUDA backend that the generic Backend interface does not carry.
// Available only in builds with TESSERA_HAVE_CUDA (tessera_backend defines it publicly).
#pragma once

#include "absl/status/status.h"
#include "core/backend/backend.h"

namespace tessera {

// How GroupedMatmul* run their groups in one launch. Both are kept until they are measured on a GPU
// (ops/bench/bench_gpu_grouped_gemm); the default comes from env TESSERA_GROUPED_GEMM ("cublas" or
// "kernel"), else kCublas. Problems whose A and B dtypes differ always use kKernel (cuBLAS needs equal types).
enum class GroupedGemmImpl { kCublas, kKernel };

// INVALID_ARGUMENT when `backend` is not a CUDA backend.
absl::Status SetCudaGroupedGemmImpl(Backend& backend, GroupedGemmImpl impl);

}  // namespace tessera
