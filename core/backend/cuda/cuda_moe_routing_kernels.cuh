// Device code of the MoE routing kernels (launchers and CUB's sort: cuda_moe_routing.cu). Kept in a header
// so tests/core/backend_cuda/moe_routing_emulation_test.cc can run these same kernel bodies on the host
// where no GPU is present.
//
// Device-side MoE routing: the grouping of a layer's M = N*k (token, choice) assignments by weight set
// (MoeSortAssignments) and the grouped matmul that reads those groups' row ranges from the device
// (GroupedMatmulByOffsets), so that a decode step's MoE layer never waits for the host.
//
// Math: see backend.h. Sort: set(a) = weight_table[token_rank[a / k], topk_idx[a]]; the assignments are
// ordered by (set(a), a) (a stable sort by set); sorted position i gets token_idx[i] = a / k and
// gate_w[i] = topk_w[a]; offsets[w] = the first position whose set is >= w. GEMV: for every set w,
// y[r] = x[r] @ weights[w]^T for r in [offsets[w], offsets[w+1]), fp32 accumulation, rounded once at the store.
//
// Memory contract, sort (two kernels of ours around CUB's sort, one stream-ordered scratch allocation):
//  1. keys[a] = set(a) (or W when any value is out of range: sets the error bit, and W sorts after every
//     group, so the assignment lies outside all of them), vals[a] = a;
//  2. cub::DeviceRadixSort::SortPairs on (keys, vals), bits [0, bits(W)) (stable, so ties keep a's order:
//     bit-identical to the host reference's counting sort);
//  3. one grid-stride launch writes token_idx/gate_w for every sorted position and offsets[w] for every
//     w in [0, W] (binary search of w in the sorted keys: offsets[W] = number of valid assignments).
// M == 0 runs only step 3 (offsets all zero).
// Memory contract, GEMV (one launch; decode-sized groups, memory-bound on the weights): grid
// (W, feature blocks); block (w, b) handles set w's rows and output features [16b, 16b + 16) (a grid-stride
// loop over feature blocks when there are more than 65535). Empty sets return at once and read no weight.
// 4 warps per block, 4 output features per warp; rows in chunks of up to 8 with 4x8 fp32 accumulators in
// registers (bodies compiled for 1, 2, 4 and 8 rows: a chunk of 3 runs the 4-row body with its last row
// repeated and not stored); the lanes stride over `in` with 16-byte loads (8 bf16/f16 or 4 f32: when `in` * dtype size
// is a multiple of 16 and x and every weight are 16-byte aligned, checked on the host) or with scalar
// loads otherwise, and each (feature, row) sum is a WarpSum. Each chunk reads the warp's 4 weight rows
// once (a set with more than 8 rows re-reads them per chunk, mostly from L2). The kernel has no barriers,
// so blocks and warps may leave early. Offsets that are not a row range of [0, M] set the error bit and
// the set is skipped.
// Occupancy: the 8-row body needs ~170 registers, so blocks are 128 threads with 3 per SM (12 warps, no
// spills on sm_90); smaller blocks also spread a decode step's few used sets over more SMs.
#pragma once

#include "core/backend/cuda/cuda_device_util.cuh"
#include "core/backend/cuda/cuda_kernels.h"

// An unnamed namespace: the .cu and the host emulation test each get their own copies (see
// cuda_attention_tiled_kernels.cuh).
namespace tessera::cuda_kernels::moe_routing {
namespace {


// ---- MoeSortAssignments ---------------------------------------------------------------------------------

__global__ void MoeKeysKernel(const int32_t* topk_idx, const int32_t* token_rank, const int32_t* weight_table,
                              int64_t m, int64_t k, int64_t ranks, int64_t experts, uint32_t sets, uint32_t* keys,
                              int32_t* vals, int* err) {
  for (int64_t a = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; a < m; a += int64_t{gridDim.x} * blockDim.x) {
    const int32_t e = topk_idx[a];
    const int32_t r = token_rank[a / k];
    uint32_t key = sets;  // out of range: after every group
    if (e >= 0 && e < experts && r >= 0 && r < ranks) {
      const int32_t s = weight_table[r * experts + e];
      if (s >= 0 && static_cast<uint32_t>(s) < sets) key = static_cast<uint32_t>(s);
    }
    if (key == sets) atomicOr(err, kErrMoeSortValue);
    keys[a] = key;
    vals[a] = static_cast<int32_t>(a);
  }
}

// Positions i < m: the sorted assignment's token and gate weight. Positions w <= sets: offsets[w] =
// lower_bound(keys, w). keys/vals may be null when m == 0.
__global__ void MoeScatterKernel(const uint32_t* keys, const int32_t* vals, const float* topk_w, int64_t m,
                                 int64_t k, uint32_t sets, int32_t* token_idx, float* gate_w, int32_t* offsets) {
  const int64_t total = m > int64_t{sets} + 1 ? m : int64_t{sets} + 1;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    if (i < m) {
      const int32_t a = vals[i];
      token_idx[i] = static_cast<int32_t>(a / k);
      gate_w[i] = topk_w[a];
    }
    if (i <= int64_t{sets}) {
      const uint32_t w = static_cast<uint32_t>(i);
      int64_t lo = 0, hi = m;  // first position whose key >= w
      while (lo < hi) {
        const int64_t mid = (lo + hi) / 2;
        if (keys[mid] < w) {
          lo = mid + 1;
        } else {
          hi = mid;
        }
      }
      offsets[i] = static_cast<int32_t>(lo);
    }
  }
}

// ---- GroupedMatmulByOffsets -----------------------------------------------------------------------------

constexpr int kGemvThreads = 128;
constexpr int kGemvWarps = kGemvThreads / 32;
constexpr int kGemvFeat = 4;                                // output features per warp
constexpr int kGemvFeatPerBlock = kGemvWarps * kGemvFeat;  // 16
constexpr int kGemvRows = 8;                                // rows per chunk (accumulators in registers)
static_assert(kGemvRows == 8, "GroupedGemvKernel's bodies for 1, 2, 4 and 8 rows assume 8");

__device__ __forceinline__ float ToF(float v) { return v; }
__device__ __forceinline__ float ToF(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float ToF(__half v) { return __half2float(v); }

// 8 bytes of T (two 32-bit words) to floats, exact. The tag pointer selects T.
__device__ __forceinline__ void Unpack(uint2 u, float (&f)[2], float*) {
  f[0] = __uint_as_float(u.x);
  f[1] = __uint_as_float(u.y);
}
__device__ __forceinline__ void Unpack(uint2 u, float (&f)[4], __nv_bfloat16*) {
  // Little-endian: element 2i is word i's low half; a bf16 is the top 16 bits of its float.
  f[0] = __uint_as_float(u.x << 16);
  f[1] = __uint_as_float(u.x & 0xffff0000u);
  f[2] = __uint_as_float(u.y << 16);
  f[3] = __uint_as_float(u.y & 0xffff0000u);
}
__device__ __forceinline__ void Unpack(uint2 u, float (&f)[4], __half*) {
  f[0] = __half2float(__ushort_as_half(static_cast<unsigned short>(u.x & 0xffffu)));
  f[1] = __half2float(__ushort_as_half(static_cast<unsigned short>(u.x >> 16)));
  f[2] = __half2float(__ushort_as_half(static_cast<unsigned short>(u.y & 0xffffu)));
  f[3] = __half2float(__ushort_as_half(static_cast<unsigned short>(u.y >> 16)));
}

// One warp: y[r, f] = dot(x[r], w[f]) for the nr <= kRows rows of x starting at `xr` and the nf <= kGemvFeat
// weight rows starting at `wr`. kRows is compile-time, so the loops unroll with no branches: rows r >= nr
// re-read row nr - 1 and features f >= nf re-read row nf - 1 (valid addresses, cache hits), and are not
// stored.
template <typename T, bool kVec, int kRows>
__device__ __forceinline__ void GemvChunk(const T* __restrict__ xr, int nr, const T* __restrict__ wr, int nf,
                                          int64_t in, void* __restrict__ y, int dty, int64_t y_off, int64_t out,
                                          int lane) {
  float acc[kGemvFeat][kRows];
#pragma unroll
  for (int f = 0; f < kGemvFeat; ++f) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[f][r] = 0.0f;
  }
  int frow[kGemvFeat];  // the weight row feature f reads
#pragma unroll
  for (int f = 0; f < kGemvFeat; ++f) frow[f] = f < nf ? f : nf - 1;
  int xrow[kRows];  // the x row row r reads
#pragma unroll
  for (int r = 0; r < kRows; ++r) xrow[r] = r < nr ? r : nr - 1;
  if constexpr (kVec) {
    constexpr int kV = 16 / static_cast<int>(sizeof(T));
    const int64_t nvec = in / kV;  // uint4s per row
    const uint4* __restrict__ wv = reinterpret_cast<const uint4*>(wr);
    const uint4* __restrict__ xv = reinterpret_cast<const uint4*>(xr);
#pragma unroll 1
    for (int64_t v = lane; v < nvec; v += 32) {
      uint4 wraw[kGemvFeat];  // every weight load of this step is issued before any use
#pragma unroll
      for (int f = 0; f < kGemvFeat; ++f) wraw[f] = __ldg(wv + frow[f] * nvec + v);
      // Two halves of 8 bytes each, so that only half of the weights are held as floats at a time
      // (register pressure: see Occupancy at the top).
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float wf[kGemvFeat][kV / 2];
#pragma unroll
        for (int f = 0; f < kGemvFeat; ++f) {
          Unpack(h == 0 ? make_uint2(wraw[f].x, wraw[f].y) : make_uint2(wraw[f].z, wraw[f].w), wf[f],
                 static_cast<T*>(nullptr));
        }
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          float xf[kV / 2];
          Unpack(__ldg(reinterpret_cast<const uint2*>(xv + xrow[r] * nvec + v) + h), xf, static_cast<T*>(nullptr));
#pragma unroll
          for (int f = 0; f < kGemvFeat; ++f) {
#pragma unroll
            for (int e = 0; e < kV / 2; ++e) acc[f][r] = fmaf(wf[f][e], xf[e], acc[f][r]);
          }
        }
      }
    }
  } else {
#pragma unroll 1
    for (int64_t c = lane; c < in; c += 32) {
      float wf[kGemvFeat];
#pragma unroll
      for (int f = 0; f < kGemvFeat; ++f) wf[f] = ToF(wr[frow[f] * in + c]);
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float xf = ToF(xr[xrow[r] * in + c]);
#pragma unroll
        for (int f = 0; f < kGemvFeat; ++f) acc[f][r] = fmaf(wf[f], xf, acc[f][r]);
      }
    }
  }
  // Every lane of the warp runs these shuffles (nf is warp-uniform; only lane 0 stores).
#pragma unroll
  for (int f = 0; f < kGemvFeat; ++f) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float s = WarpSum(acc[f][r]);
      if (lane == 0 && f < nf && r < nr) St(y, dty, y_off + r * out + f, s);
    }
  }
}

// x: [m, in] of T; weights: `gridDim.x` device pointers to [out, in] of T; y: [m, out] of dtype dty.
// kVec: 16-byte loads (the host checked alignment and in * sizeof(T) % 16 == 0).
template <typename T, bool kVec>
__global__ void __launch_bounds__(kGemvThreads, 3)
    GroupedGemvKernel(const T* __restrict__ x, const void* const* __restrict__ weights,
                      const int32_t* __restrict__ offsets, int64_t m, int64_t in, int64_t out, void* __restrict__ y,
                      int dty, int* err) {
  const int64_t w = blockIdx.x;
  const int64_t begin = offsets[w], end = offsets[w + 1];
  if (begin < 0 || end < begin || end > m) {
    if (threadIdx.x == 0 && blockIdx.y == 0) atomicOr(err, kErrMoeOffsets);
    return;  // whole block (no barriers in this kernel)
  }
  if (begin == end) return;  // empty set: read no weight
  const T* __restrict__ wt = static_cast<const T*>(weights[w]);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  // n0, nf and nr are uniform across the warp, so the whole warp takes the same path (the WarpSum
  // shuffles in GemvChunk need all 32 lanes).
  for (int64_t n0 = (blockIdx.y * int64_t{kGemvWarps} + warp) * kGemvFeat; n0 < out;
       n0 += int64_t{gridDim.y} * kGemvFeatPerBlock) {
    const int nf = out - n0 < kGemvFeat ? static_cast<int>(out - n0) : kGemvFeat;
    const T* wr = wt + n0 * in;
    for (int64_t r0 = begin; r0 < end; r0 += kGemvRows) {
      const T* xr = x + r0 * in;
      const int64_t y_off = r0 * out + n0;
      const int nr = end - r0 < kGemvRows ? static_cast<int>(end - r0) : kGemvRows;
      // Four bodies (1, 2, 4, 8 rows) keep the wasted work under 2x the rows' and the code small.
      if (nr == 1) {
        GemvChunk<T, kVec, 1>(xr, nr, wr, nf, in, y, dty, y_off, out, lane);
      } else if (nr == 2) {
        GemvChunk<T, kVec, 2>(xr, nr, wr, nf, in, y, dty, y_off, out, lane);
      } else if (nr <= 4) {
        GemvChunk<T, kVec, 4>(xr, nr, wr, nf, in, y, dty, y_off, out, lane);
      } else {
        GemvChunk<T, kVec, kGemvRows>(xr, nr, wr, nf, in, y, dty, y_off, out, lane);
      }
    }
  }
}

}  // namespace
}  // namespace tessera::cuda_kernels::moe_routing
