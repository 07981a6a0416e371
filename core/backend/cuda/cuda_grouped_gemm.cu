// Launcher of the grouped GEMM kernels (cuda_grouped_gemm_kernels.cuh has the math, the scheduling and
// the memory contract); cuda_matmul.cc builds the problem table and selects this path.
#include "core/backend/cuda/cuda_grouped_gemm_kernels.cuh"

namespace tessera::cuda_kernels {
namespace {

using grouped_gemm::GroupedGemmSimtKernel;
using grouped_gemm::GroupedGemmWmmaKernel;
using grouped_gemm::kSimtThreads;
using grouped_gemm::kWmmaThreads;

}  // namespace

cudaError_t GroupedGemm(const GemmProblem* problems, int num_problems, int64_t total_tiles, int dta, int dtb,
                        int dtc, cudaStream_t stream) {
  if (num_problems == 0 || total_tiles == 0) return cudaSuccess;
  if (total_tiles > (1LL << 31) - 1) return cudaErrorInvalidConfiguration;
  const unsigned grid = static_cast<unsigned>(total_tiles);
  if (dta == kBF16 && dtb == kBF16) {
    GroupedGemmWmmaKernel<<<grid, kWmmaThreads, 0, stream>>>(problems, num_problems, dtc);
  } else {
    GroupedGemmSimtKernel<<<grid, kSimtThreads, 0, stream>>>(problems, num_problems, dta, dtb, dtc);
  }
  return cudaGetLastError();
}

}  // namespace tessera::cuda_kernels
