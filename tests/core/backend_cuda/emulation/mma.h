// Test-only host stand-in for CUDA's <mma.h> (found first through the include path of the emulation test):
// the subset of nvcuda::wmma the tiled attention kernels use, for 16x16x16 tiles. A fragment holds its
// whole tile as floats in row-major [row][col] order; only lane 0 of a warp loads, multiplies and stores
// (the other lanes' calls do nothing), so a warp-collective call still happens once per warp and a
// store is visible to the other lanes after the __syncwarp the kernels already place there.
#pragma once

#include <cuda_bf16.h>

#include "tests/core/backend_cuda/emulation/cuda_emulation.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  float v[16 * 16] = {};
};

namespace detail {
inline bool Leader() { return (threadIdx.x & 31) == 0; }
inline float ToFloat(float x) { return x; }
inline float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, float x) {
  for (float& e : f.v) e = x;
}

// Element (r, c) at p[r * ldm + c].
template <typename Use, int M, int N, int K, typename T>
void load_matrix_sync(fragment<Use, M, N, K, T, row_major>& f, const T* p, unsigned ldm) {
  if (!detail::Leader()) return;
  for (int r = 0; r < 16; ++r) {
    for (int c = 0; c < 16; ++c) f.v[r * 16 + c] = detail::ToFloat(p[r * ldm + c]);
  }
}

// Element (r, c) at p[c * ldm + r].
template <typename Use, int M, int N, int K, typename T>
void load_matrix_sync(fragment<Use, M, N, K, T, col_major>& f, const T* p, unsigned ldm) {
  if (!detail::Leader()) return;
  for (int r = 0; r < 16; ++r) {
    for (int c = 0; c < 16; ++c) f.v[r * 16 + c] = detail::ToFloat(p[c * ldm + r]);
  }
}

template <int M, int N, int K>
void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm, layout_t layout) {
  if (!detail::Leader()) return;
  for (int r = 0; r < 16; ++r) {
    for (int c = 0; c < 16; ++c) f.v[r * 16 + c] = layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
  }
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
  if (!detail::Leader()) return;
  for (int r = 0; r < 16; ++r) {
    for (int c = 0; c < 16; ++c) (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.v[r * 16 + c];
  }
}

// d = a b + c (fp32 accumulation; bf16 products are exact in fp32, as on the tensor cores).
template <int M, int N, int K, typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
              const fragment<matrix_b, M, N, K, T, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
  if (!detail::Leader()) return;
  float out[16 * 16];
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 16; ++j) {
      float s = c.v[i * 16 + j];
      for (int k = 0; k < 16; ++k) s += a.v[i * 16 + k] * b.v[k * 16 + j];
      out[i * 16 + j] = s;
    }
  }
  for (int e = 0; e < 16 * 16; ++e) d.v[e] = out[e];
}

}  // namespace nvcuda::wmma
