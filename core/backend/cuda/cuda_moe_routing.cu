// Launchers of the MoE routing kernels (cuda_moe_routing_kernels.cuh has the math and the memory
// contract) around CUB's stable radix sort.
#include <cub/device/device_radix_sort.cuh>

#include "core/backend/cuda/cuda_moe_routing_kernels.cuh"

namespace tessera::cuda_kernels {
namespace {

using moe_routing::GroupedGemvKernel;
using moe_routing::kGemvFeatPerBlock;
using moe_routing::kGemvThreads;
using moe_routing::MoeKeysKernel;
using moe_routing::MoeScatterKernel;

// Smallest b >= 1 with v < 2^b (so every key in [0, v] fits in b bits).
int BitsFor(uint32_t v) {
  int b = 1;
  while (b < 32 && (v >> b) != 0) ++b;
  return b;
}

template <typename T>
cudaError_t LaunchGemv(const void* x, const void* const* weights, const int32_t* offsets, int32_t sets, int64_t m,
                       int64_t in, int64_t out, void* y, int dty, bool vec, int* err, cudaStream_t stream) {
  int64_t feature_blocks = (out + kGemvFeatPerBlock - 1) / kGemvFeatPerBlock;
  if (feature_blocks < 1) feature_blocks = 1;  // out == 0: still validates the offsets
  if (feature_blocks > 65535) feature_blocks = 65535;
  const dim3 grid(static_cast<unsigned>(sets), static_cast<unsigned>(feature_blocks));
  const T* xt = static_cast<const T*>(x);
  if (vec) {
    GroupedGemvKernel<T, true><<<grid, kGemvThreads, 0, stream>>>(xt, weights, offsets, m, in, out, y, dty, err);
  } else {
    GroupedGemvKernel<T, false><<<grid, kGemvThreads, 0, stream>>>(xt, weights, offsets, m, in, out, y, dty, err);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t MoeSortAssignments(const int32_t* topk_idx, const float* topk_w, const int32_t* token_rank,
                               const int32_t* weight_table, int64_t n, int64_t k, int64_t ranks, int64_t experts,
                               int32_t sets, int32_t* token_idx, float* gate_w, int32_t* offsets, int* err,
                               cudaStream_t stream) {
  const int64_t m = n * k;
  if (m < 0 || m > INT32_MAX || sets < 0 || sets == INT32_MAX) return cudaErrorInvalidValue;
  const uint32_t usets = static_cast<uint32_t>(sets);
  const int64_t total = m > int64_t{sets} + 1 ? m : int64_t{sets} + 1;
  if (m == 0) {  // nothing to sort: offsets all zero
    MoeScatterKernel<<<GridFor(total, 256), 256, 0, stream>>>(nullptr, nullptr, topk_w, 0, k, usets, token_idx,
                                                              gate_w, offsets);
    return cudaGetLastError();
  }
  const int items = static_cast<int>(m);
  const int end_bit = BitsFor(usets);
  size_t sort_bytes = 0;
  cudaError_t e = cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<const uint32_t*>(nullptr),
                                                  static_cast<uint32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                                  static_cast<int32_t*>(nullptr), items, 0, end_bit, stream);
  if (e != cudaSuccess) return e;
  // Scratch, stream-ordered: keys and values in, keys and values sorted, CUB's temporary storage.
  const size_t ints = static_cast<size_t>(m) * sizeof(int32_t), ints_aligned = (ints + 255) / 256 * 256;
  void* scratch = nullptr;
  e = cudaMallocAsync(&scratch, 4 * ints_aligned + sort_bytes, stream);
  if (e != cudaSuccess) return e;
  char* base = static_cast<char*>(scratch);
  uint32_t* keys_in = reinterpret_cast<uint32_t*>(base);
  int32_t* vals_in = reinterpret_cast<int32_t*>(base + ints_aligned);
  uint32_t* keys = reinterpret_cast<uint32_t*>(base + 2 * ints_aligned);
  int32_t* vals = reinterpret_cast<int32_t*>(base + 3 * ints_aligned);
  void* sort_tmp = base + 4 * ints_aligned;
  MoeKeysKernel<<<GridFor(m, 256), 256, 0, stream>>>(topk_idx, token_rank, weight_table, m, k, ranks, experts, usets,
                                                     keys_in, vals_in, err);
  e = cudaGetLastError();
  if (e == cudaSuccess) {
    e = cub::DeviceRadixSort::SortPairs(sort_tmp, sort_bytes, keys_in, keys, vals_in, vals, items, 0, end_bit, stream);
  }
  if (e == cudaSuccess) {
    MoeScatterKernel<<<GridFor(total, 256), 256, 0, stream>>>(keys, vals, topk_w, m, k, usets, token_idx, gate_w,
                                                              offsets);
    e = cudaGetLastError();
  }
  const cudaError_t f = cudaFreeAsync(scratch, stream);
  return e != cudaSuccess ? e : f;
}

cudaError_t GroupedMatmulByOffsets(const void* x, int dtx, const void* const* weights, const int32_t* offsets,
                                   int32_t sets, int64_t m, int64_t in, int64_t out, void* y, int dty, bool vec,
                                   int* err, cudaStream_t stream) {
  if (sets <= 0) return cudaSuccess;
  if (dtx == kBF16) return LaunchGemv<__nv_bfloat16>(x, weights, offsets, sets, m, in, out, y, dty, vec, err, stream);
  if (dtx == kF16) return LaunchGemv<__half>(x, weights, offsets, sets, m, in, out, y, dty, vec, err, stream);
  if (dtx == kF32) return LaunchGemv<float>(x, weights, offsets, sets, m, in, out, y, dty, vec, err, stream);
  return cudaErrorInvalidValue;
}

}  // namespace tessera::cuda_kernels
