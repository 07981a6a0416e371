// Launchers of the row kernels (cuda_rows_kernels.cuh has the math and the memory contract): gather /
// scatter-add (around CUB's stable radix sort), row dot with gather, the fused router.
#include <cub/device/device_radix_sort.cuh>

#include "core/backend/cuda/cuda_rows_kernels.cuh"

namespace tessera::cuda_kernels {
namespace {

using rows::CheckIndicesKernel;
using rows::GatherRowsKernel;
using rows::IotaKernel;
using rows::kRouterWarps;
using rows::RouterBackwardKernel;
using rows::RouterForwardKernel;
using rows::RowDotGatherKernel;
using rows::ScatterAddSortedKernel;

int RowThreads(int64_t d) { return d >= 256 ? 256 : (d >= 128 ? 128 : (d >= 64 ? 64 : 32)); }

unsigned RowBlocks(int64_t rows) {
  return static_cast<unsigned>(rows < 1 ? 1 : (rows > (1LL << 31) - 1 ? (1LL << 31) - 1 : rows));
}

}  // namespace

cudaError_t CheckIndices(const int32_t* idx, int64_t n, int32_t lo, int32_t hi, int* flag, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  unsigned blocks = GridFor(n, 256);
  if (blocks > 256) blocks = 256;
  CheckIndicesKernel<<<blocks, 256, 0, stream>>>(idx, n, lo, hi, flag);
  return cudaGetLastError();
}

cudaError_t GatherRows(const void* src, int dts, int64_t n_src, const int32_t* idx, const float* scale,
                       void* dst, int dtd, int64_t m, int64_t d, int err_bit, int* err, cudaStream_t stream) {
  if (m == 0 || d == 0) return cudaSuccess;
  GatherRowsKernel<<<RowBlocks(m), RowThreads(d), 0, stream>>>(src, dts, n_src, idx, scale, dst, dtd, m, d,
                                                             err_bit, err);
  return cudaGetLastError();
}

cudaError_t ScatterAddRows(const void* src, int dts, const int32_t* idx, const float* scale, void* dst, int dtd,
                           int64_t n_dst, int64_t m, int64_t d, int err_bit, int* err, cudaStream_t stream) {
  if (m == 0 || d == 0) return cudaSuccess;
  if (m > INT32_MAX) return cudaErrorInvalidValue;
  const int n = static_cast<int>(m);
  size_t sort_bytes = 0;
  cudaError_t e = cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, idx, static_cast<int32_t*>(nullptr),
                                                  static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
                                                  n, 0, 32, stream);
  if (e != cudaSuccess) return e;
  // Scratch, stream-ordered: rows in, sorted keys, sorted rows, CUB's temporary storage.
  const size_t ints = static_cast<size_t>(m) * sizeof(int32_t), ints_aligned = (ints + 255) / 256 * 256;
  void* scratch = nullptr;
  e = cudaMallocAsync(&scratch, 3 * ints_aligned + sort_bytes, stream);
  if (e != cudaSuccess) return e;
  char* base = static_cast<char*>(scratch);
  int32_t* rows_in = reinterpret_cast<int32_t*>(base);
  int32_t* keys = reinterpret_cast<int32_t*>(base + ints_aligned);
  int32_t* rows = reinterpret_cast<int32_t*>(base + 2 * ints_aligned);
  void* sort_tmp = base + 3 * ints_aligned;
  IotaKernel<<<GridFor(m, 256), 256, 0, stream>>>(rows_in, m);
  e = cudaGetLastError();
  if (e == cudaSuccess) {
    e = cub::DeviceRadixSort::SortPairs(sort_tmp, sort_bytes, idx, keys, rows_in, rows, n, 0, 32, stream);
  }
  if (e == cudaSuccess) {
    ScatterAddSortedKernel<<<RowBlocks(m), RowThreads(d), 0, stream>>>(src, dts, keys, rows, scale, dst, dtd, n_dst,
                                                                       m, d, err_bit, err);
    e = cudaGetLastError();
  }
  const cudaError_t f = cudaFreeAsync(scratch, stream);
  return e != cudaSuccess ? e : f;
}

cudaError_t RowDotGather(const void* a, int dta, const void* b, int dtb, int64_t n_b, const int32_t* idx,
                         void* out, int dto, int64_t m, int64_t d, int* err, cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  RowDotGatherKernel<<<RowBlocks(m), RowThreads(d), 0, stream>>>(a, dta, b, dtb, n_b, idx, out, dto, m, d, err);
  return cudaGetLastError();
}

cudaError_t RouterForward(const void* logits, int dtl, int64_t n, int e, int k, bool normalize, void* probs,
                          int dtp, int32_t* topk_idx, float* topk_w, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int64_t blocks = (n + kRouterWarps - 1) / kRouterWarps;
  RouterForwardKernel<<<RowBlocks(blocks), kRouterWarps * 32, 0, stream>>>(logits, dtl, n, e, k, normalize,
                                                                          probs, dtp, topk_idx, topk_w);
  return cudaGetLastError();
}

cudaError_t RouterBackward(const void* probs, int dtp, const int32_t* topk_idx, const float* topk_w,
                           bool normalize, const float* dtopk_w, void* dlogits, int dtl, int64_t n, int e, int k,
                           cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int64_t blocks = (n + kRouterWarps - 1) / kRouterWarps;
  RouterBackwardKernel<<<RowBlocks(blocks), kRouterWarps * 32, 0, stream>>>(probs, dtp, topk_idx, topk_w,
                                                                           normalize, dtopk_w, dlogits, dtl, n,
                                                                           e, k);
  return cudaGetLastError();
}

}  // namespace tessera::cuda_kernels
