// Runs CUDA kernel bodies on the host, for tests on machines without a GPU: each block's threads are
// host threads (one block at a time), __syncthreads / __syncwarp are barriers, __shfl_xor_sync goes
// through a per-warp exchange array, atomics are std::atomic_ref / a mutex, and nvcuda::wmma is the
// scalar stand-in in emulation/mma.h (which shadows CUDA's header through the include path).
//
// What it checks: a kernel's indexing, masking, tiling, barrier placement (a missing barrier shows up as
// a wrong result, not reliably) and the numbers it computes, from the same source the GPU build compiles.
// What it does not: timing, memory coalescing, register/shared-memory limits, or the GPU's own rounding
// and accumulation order (bf16 products are exact in fp32 on both; sums may differ in order).
//
// Include this before any kernel header. Shared memory: `__shared__` becomes `static` (blocks run one at a
// time, so a function's static array is its block's), and TESSERA_DYNAMIC_SHARED (cuda_device_util.cuh)
// names one block-wide buffer of kDynamicSharedBytes.
#pragma once

#define __launch_bounds__(...)

#include <atomic>
#include <barrier>
#include <bit>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#undef __shared__
#define __shared__ static

namespace cuda_emulation {

constexpr int kMaxWarps = 32;
constexpr size_t kDynamicSharedBytes = 256 * 1024;
alignas(128) inline unsigned char dynamic_shared[kDynamicSharedBytes];

struct BlockState {
  explicit BlockState(int threads) : block(threads) {
    for (int w = 0; w < (threads + 31) / 32; ++w) warps.push_back(std::make_unique<std::barrier<>>(32));
  }
  std::barrier<> block;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  uint64_t exchange[kMaxWarps][32] = {};  // one 8-byte slot per lane for the warp shuffles
};

inline thread_local BlockState* current_block = nullptr;

}  // namespace cuda_emulation

#define TESSERA_DYNAMIC_SHARED(name) unsigned char* name = ::cuda_emulation::dynamic_shared

namespace cuda_emulation {

inline std::mutex atomic_mutex;

}  // namespace cuda_emulation

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

inline void __syncthreads() { cuda_emulation::current_block->block.arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) {
  cuda_emulation::current_block->warps[threadIdx.x / 32]->arrive_and_wait();
}
// Lane i gets lane (i ^ lane_mask)'s v, for 4- and 8-byte values (float, int, double).
template <typename T>
T __shfl_xor_sync(unsigned, T v, int lane_mask) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>);
  uint64_t* x = cuda_emulation::current_block->exchange[threadIdx.x / 32];
  const int lane = static_cast<int>(threadIdx.x & 31);
  std::memcpy(&x[lane], &v, sizeof(T));
  __syncwarp();
  T r;
  std::memcpy(&r, &x[lane ^ lane_mask], sizeof(T));
  __syncwarp();
  return r;
}
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline double atomicAdd(double* p, double v) { return std::atomic_ref<double>(*p).fetch_add(v); }
inline int atomicOr(int* p, int v) { return std::atomic_ref<int>(*p).fetch_or(v); }
inline int atomicMin(int* p, int v) {
  std::atomic_ref<int> a(*p);
  int old = a.load();
  while (v < old && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
// The GPU's rsqrtf is approximate (2 ulp); here it is exact, as the CPU backend computes it.
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
// CUDA's integer min for 64-bit operands.
inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
inline float __uint_as_float(unsigned u) { return std::bit_cast<float>(u); }
// The read-only-cache load is a plain load here (the kernels use it on 8- and 16-byte vectors).
inline uint2 __ldg(const uint2* p) { return *p; }
inline uint4 __ldg(const uint4* p) { return *p; }
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* p, __nv_bfloat16 v) {
  std::lock_guard<std::mutex> lock(cuda_emulation::atomic_mutex);
  const __nv_bfloat16 old = *p;
  *p = __float2bfloat16_rn(__bfloat162float(old) + __bfloat162float(v));
  return old;
}
inline __half atomicAdd(__half* p, __half v) {
  std::lock_guard<std::mutex> lock(cuda_emulation::atomic_mutex);
  const __half old = *p;
  *p = __float2half_rn(__half2float(old) + __half2float(v));
  return old;
}

namespace cuda_emulation {

// Runs body() as every thread of every block of `grid` (blocks one after another, `threads` host
// threads each), with threadIdx / blockIdx / blockDim / gridDim set per thread. Blocks run in reverse
// index order: a GPU promises no order, and a kernel whose blocks overwrite each other's output shows
// it here by leaving the lower-index block's (wrong) values in place.
inline void Launch(dim3 grid, unsigned threads, const std::function<void()>& body) {
  for (unsigned bz = grid.z; bz-- > 0;) {
    for (unsigned by = grid.y; by-- > 0;) {
      for (unsigned bx = grid.x; bx-- > 0;) {
        BlockState state(static_cast<int>(threads));
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (unsigned t = 0; t < threads; ++t) {
          pool.emplace_back([&, t] {
            current_block = &state;
            threadIdx = uint3{t, 0, 0};
            blockIdx = uint3{bx, by, bz};
            blockDim = dim3(threads, 1, 1);
            gridDim = grid;
            body();
          });
        }
        for (std::thread& th : pool) th.join();
      }
    }
  }
}

}  // namespace cuda_emulation
