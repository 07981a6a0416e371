// Device code of the tiled attention kernels (launchers: cuda_attention_tiled.cu). Kept in a header so
// tests/core/backend_cuda/tiled_attention_emulation_test.cc can run these same kernel bodies on the host
// (threads for lanes, barriers for __syncthreads, a scalar WMMA) where no GPU is present.
//
// Causal GQA attention on tensor cores, forward and backward, for bf16 q/k/v (and bf16 dout) with fp32
// softmax statistics and accumulation: the FlashAttention-2 schedule on WMMA 16x16x16 bf16 tiles.
//
// Math (same as cuda_attention.cu): query i of a sequence sits at absolute position
// a_i = kv_len - q_len + i and sees keys j <= a_i; s_ij = scale * q_i . k_j; out_i = sum_j p_ij v_j with
// p_ij = exp(s_ij - lse_i); with a sliding window (AttnSeqDesc::window > 0) query i sees only keys
// a_i - window < j <= a_i: the forward and dq blocks start at the key tile holding the first key their
// first query sees, the dk/dv blocks stop at the last query tile that sees their last key, and the
// score mask drops the rest. Backward with D_i = dout_i . out_i:
//   ds_ij = p_ij (dout_i . v_j - D_i);  dq_i = scale sum_j ds_ij k_j;  dk_j += scale sum_i ds_ij q_i;
//   dv_j += sum_i p_ij dout_i  (dk/dv summed over the query heads of kv head j's group).
//
// Why: the row-wise kernel runs one block per (query row, head), so every query row re-reads all the
// keys and values it attends to (a 512-token training sequence reads each K/V row ~256 times per head),
// and its backward adds into dk/dv with one atomic per element per (query, key) pair. Here a block owns
// 64 query rows (forward, dq) or 64 key rows (dk/dv), K/V/Q/dO tiles are read once per block into shared
// memory, the products run on tensor cores, and dk/dv are accumulated in registers over every query
// tile and every head of the group, then added to memory once (atomically: two sequences may share a
// cache gradient).
//
// Kernel shapes: 128 threads = 4 warps; warp w owns rows [16w, 16w + 16) of the block's 64-row tile.
// Softmax/mask work is SIMT on fp32 score tiles in shared memory: lane l handles row l / 2, columns
// [32 (l % 2), 32 (l % 2) + 32). Probabilities (and ds) are rounded to bf16 for the second product, as
// every FlashAttention does; statistics (max, sum, lse, D) stay fp32.
// Memory contract: q, k, v, dout rows are 16-byte aligned bf16 with head_dim in {64, 128} (the host
// checks, see TiledAttentionSupports); rows past kv_len / q_len are never read (tiles are zero-filled
// there). Forward writes out/lse of its rows only; the dq kernel overwrites dq of its rows only (the
// host zeroes rows outside every sequence); dk/dv accumulate. Dynamic shared memory: ~110 KB (forward),
// ~123 KB (dk/dv), ~114 KB (dq) at head_dim 128.
#pragma once

#include <mma.h>

#include "core/backend/cuda/cuda_device_util.cuh"
#include "core/backend/cuda/cuda_kernels.h"

// An unnamed namespace: each including file (the .cu, the host emulation test) gets its own copies, so
// the emulation's host-compiled instantiations can never be linked in place of the device build's.
namespace tessera::cuda_kernels::tiled_attention {
namespace {

using namespace nvcuda;
using bf16 = __nv_bfloat16;

constexpr int kTile = kAttnTileRows;  // query rows of a forward / dq block; key rows of a dk/dv block (and the step)
constexpr int kWarpRows = 16;  // rows per warp: one WMMA tile
constexpr int kWarps = kTile / kWarpRows;
constexpr int kThreads = kWarps * 32;
constexpr int kSPitch = kTile + 4;  // fp32 score tile row pitch (floats)
constexpr int kPPitch = kTile + 8;  // bf16 probability tile row pitch (elements)

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragAcc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// Shared-memory sizes (bytes) for head_dim D. Every size is a multiple of 128, so regions carved one
// after another keep WMMA's 32-byte pointer alignment; pitches keep it for every 16-row / 16-column step.
template <int D>
struct Layout {
  static constexpr int kPitch = D + 8;                                  // bf16 Q/K/V/dO tile row pitch
  static constexpr int kTileBytes = kTile * kPitch * 2;                 // one [64][D+8] bf16 tile
  static constexpr int kScoreBytes = kWarps * kWarpRows * kSPitch * 4;  // [4 warps][16][68] f32
  static constexpr int kProbBytes = kWarps * kWarpRows * kPPitch * 2;   // [4][16][72] bf16
  static constexpr int kOPitch = D + 4;
  static constexpr int kOBytes = kWarps * kWarpRows * kOPitch * 4;      // [4][16][D+4] f32
  static constexpr int kForwardBytes = 3 * kTileBytes + kScoreBytes + kProbBytes + kOBytes;
  static constexpr int kKvBytes = 4 * kTileBytes + 2 * kScoreBytes + 2 * kProbBytes + 2 * kTile * 4;
  static constexpr int kDqBytes = 4 * kTileBytes + 2 * kScoreBytes + kProbBytes;
  static_assert(kTileBytes % 128 == 0 && kScoreBytes % 128 == 0 && kProbBytes % 128 == 0 && kOBytes % 128 == 0);
};

// Hands out consecutive regions of the dynamic shared memory, in the order of the Layout sizes.
struct SharedCarver {
  unsigned char* next;
  template <typename T>
  __device__ __forceinline__ T* Take(int bytes) {
    T* r = reinterpret_cast<T*>(next);
    next += bytes;
    return r;
  }
};

// Rows of a 64-row tile that exist when `left` rows remain.
__device__ __forceinline__ int TileRows(int64_t left) { return left < kTile ? static_cast<int>(left) : kTile; }

// dst[r][0, D) = src row (row0 + r) at column offset col (element (row, col + c) at src[row * stride + col + c])
// for r < rows; zeros for rows in [rows, 64). 16-byte loads (D % 8 == 0, rows 16-byte aligned).
template <int D>
__device__ __forceinline__ void LoadTile(bf16* dst, const void* src, int64_t row0, int rows, int64_t stride,
                                         int64_t col) {
  constexpr int kChunks = D / 8;
  const bf16* s = static_cast<const bf16*>(src);
  for (int e = threadIdx.x; e < kTile * kChunks; e += kThreads) {
    const int r = e / kChunks, c = e % kChunks;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (r < rows) v = *reinterpret_cast<const uint4*>(s + (row0 + r) * stride + col + c * 8);
    *reinterpret_cast<uint4*>(dst + r * Layout<D>::kPitch + c * 8) = v;
  }
}

// Where a query-tile block (forward, dq: blockIdx = (tile, head)) and one of its lanes stand. Lane l of
// warp w handles query row 16 w + l / 2 of the tile and score columns [col0, col0 + 32).
struct QueryTileLane {
  AttnSeqDesc sq;
  int h, g;          // query head, its KV head
  int lane, warp;
  int64_t base;      // kv_len - q_len: absolute position of the sequence's first query
  int64_t q0;        // the tile's first query within the sequence
  int rows;          // queries in the tile (<= 64)
  int64_t nkeys;     // keys seen by the tile's last query
  int64_t k_begin;   // the first key tile any of its queries sees (0 without a window)
  int r, col0;       // this lane's row within its warp's 16, and its half of the 64 score columns
  int row_local;     // this lane's row within the tile
  bool valid;        // row_local < rows
  int64_t pos;       // its absolute position: it sees keys [0, pos], or (pos - window, pos]
  // Whether this lane's query sees key j.
  __device__ __forceinline__ bool Sees(int64_t j) const {
    return valid && j <= pos && (sq.window == 0 || j > pos - sq.window);
  }
};

__device__ __forceinline__ QueryTileLane LocateQueryTile(const AttnSeqDesc* seqs, const AttnTile* tiles, int heads,
                                                         int kv_heads) {
  QueryTileLane t;
  const AttnTile tile = tiles[blockIdx.x];
  t.sq = seqs[tile.seq];
  t.h = blockIdx.y;
  t.g = t.h / (heads / kv_heads);
  t.lane = threadIdx.x & 31;
  t.warp = threadIdx.x >> 5;
  t.base = t.sq.kv_len - t.sq.q_len;
  t.q0 = tile.offset;
  t.rows = TileRows(t.sq.q_len - t.q0);
  t.nkeys = t.base + t.q0 + t.rows;
  t.k_begin = t.sq.window > 0 && t.base + t.q0 >= t.sq.window
                  ? (t.base + t.q0 - t.sq.window + 1) / kTile * kTile : 0;
  t.r = t.lane >> 1;
  t.col0 = (t.lane & 1) * (kTile / 2);
  t.row_local = t.warp * kWarpRows + t.r;
  t.valid = t.row_local < t.rows;
  t.pos = t.base + t.q0 + t.row_local;
  return t;
}

// A warp's 16 rows x D of a bf16 tile (pitch P), as the A operand of D / 16 products.
template <int D>
__device__ __forceinline__ void LoadRowFragments(const bf16* a, FragA (&fa)[D / 16]) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) wmma::load_matrix_sync(fa[kk], a + kk * 16, Layout<D>::kPitch);
}

// out[16][64] (pitch kSPitch) = A[16, D] . B[64 rows of b, D]^T for a warp: `a` from LoadRowFragments;
// b is a bf16 tile with pitch P read as a column-major [D][64] matrix, i.e. transposed for free.
template <int D>
__device__ __forceinline__ void WarpScores(const FragA (&a)[D / 16], const bf16* b, float* out) {
  constexpr int P = Layout<D>::kPitch;
#pragma unroll
  for (int n = 0; n < kTile / 16; ++n) {
    FragAcc acc;
    wmma::fill_fragment(acc, 0.0f);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      FragBCol fb;
      wmma::load_matrix_sync(fb, b + n * 16 * P + kk * 16, P);
      wmma::mma_sync(acc, a[kk], fb, acc);
    }
    wmma::store_matrix_sync(out + n * 16, acc, kSPitch, wmma::mem_row_major);
  }
}

// acc[n] += A[16][64] (bf16, pitch kPPitch) . B[64][D] (bf16 tile, pitch P) for the D / 16 column blocks.
template <int D>
__device__ __forceinline__ void WarpAccumulate(const bf16* a, const bf16* b, FragAcc (&acc)[D / 16]) {
  constexpr int P = Layout<D>::kPitch;
#pragma unroll
  for (int kk = 0; kk < kTile / 16; ++kk) {
    FragA fa;
    wmma::load_matrix_sync(fa, a + kk * 16, kPPitch);
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      FragBRow fb;
      wmma::load_matrix_sync(fb, b + kk * 16 * P + n * 16, P);
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
}

template <int D>
__global__ void __launch_bounds__(kThreads)
TiledForwardKernel(const bf16* q, const AttnSeqDesc* seqs, const AttnTile* tiles, int heads, int kv_heads,
                   float scale, void* out, int dto, float* lse) {
  using L = Layout<D>;
  constexpr int P = L::kPitch;
  TESSERA_DYNAMIC_SHARED(smem);
  SharedCarver carve{smem};  // kForwardBytes
  bf16* Qs = carve.Take<bf16>(L::kTileBytes);
  bf16* Ks = carve.Take<bf16>(L::kTileBytes);
  bf16* Vs = carve.Take<bf16>(L::kTileBytes);
  float* Ss = carve.Take<float>(L::kScoreBytes);
  bf16* Ps = carve.Take<bf16>(L::kProbBytes);
  float* Os = carve.Take<float>(L::kOBytes);

  const QueryTileLane t = LocateQueryTile(seqs, tiles, heads, kv_heads);
  const AttnSeqDesc& sq = t.sq;
  const int h = t.h, g = t.g, lane = t.lane, warp = t.warp, rows = t.rows, r = t.r, col0 = t.col0;
  const int row_local = t.row_local;
  const bool valid = t.valid;
  const int64_t q0 = t.q0, nkeys = t.nkeys;
  const int dcol0 = (lane & 1) * (D / 2);  // this lane's half of the output row
  float* s_w = Ss + warp * kWarpRows * kSPitch;
  bf16* p_w = Ps + warp * kWarpRows * kPPitch;
  float* o_w = Os + warp * kWarpRows * L::kOPitch;

  LoadTile<D>(Qs, q, sq.q_begin + q0, rows, static_cast<int64_t>(heads) * D, static_cast<int64_t>(h) * D);
#pragma unroll 8
  for (int c = 0; c < D / 2; ++c) o_w[r * L::kOPitch + dcol0 + c] = 0.0f;
  __syncthreads();
  FragA qa[D / 16];  // this warp's 16 query rows, kept for every key tile
  LoadRowFragments<D>(Qs + warp * kWarpRows * P, qa);

  float m = -INFINITY, l = 0.0f;
  for (int64_t k0 = t.k_begin; k0 < nkeys; k0 += kTile) {
    const int krows = TileRows(sq.kv_len - k0);
    __syncthreads();  // every warp is done with the previous K/V tile
    LoadTile<D>(Ks, sq.k, k0, krows, static_cast<int64_t>(kv_heads) * D, static_cast<int64_t>(g) * D);
    LoadTile<D>(Vs, sq.v, k0, krows, static_cast<int64_t>(kv_heads) * D, static_cast<int64_t>(g) * D);
    __syncthreads();

    WarpScores<D>(qa, Ks, s_w);  // S = Q K^T (16 x 64 per warp)
    __syncwarp();

    // Online softmax of row r over its 32 columns (the other half is the neighbouring lane).
    float x[kTile / 2];
    float mx = -INFINITY;
#pragma unroll
    for (int c = 0; c < kTile / 2; ++c) {
      const int64_t j = k0 + col0 + c;
      x[c] = t.Sees(j) ? s_w[r * kSPitch + col0 + c] * scale : -INFINITY;
      mx = fmaxf(mx, x[c]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(m, mx);
    // m_new == -inf only for rows that saw no key yet (rows past the tile's end): nothing to rescale.
    const float corr = m_new == -INFINITY ? 1.0f : expf(m - m_new);
    float sum = 0.0f;
#pragma unroll
    for (int c = 0; c < kTile / 2; ++c) {
      const float p = x[c] == -INFINITY ? 0.0f : expf(x[c] - m_new);
      sum += p;
      p_w[r * kPPitch + col0 + c] = __float2bfloat16_rn(p);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * corr + sum;
    m = m_new;
#pragma unroll 8
    for (int c = 0; c < D / 2; ++c) o_w[r * L::kOPitch + dcol0 + c] *= corr;
    __syncwarp();

    // O += P V, through the fp32 O tile in shared memory (WMMA fragments have no row-wise scaling).
    FragA pa[kTile / 16];
#pragma unroll
    for (int kk = 0; kk < kTile / 16; ++kk) wmma::load_matrix_sync(pa[kk], p_w + kk * 16, kPPitch);
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      FragAcc acc;
      wmma::load_matrix_sync(acc, o_w + n * 16, L::kOPitch, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < kTile / 16; ++kk) {
        FragBRow fb;
        wmma::load_matrix_sync(fb, Vs + kk * 16 * P + n * 16, P);
        wmma::mma_sync(acc, pa[kk], fb, acc);
      }
      wmma::store_matrix_sync(o_w + n * 16, acc, L::kOPitch, wmma::mem_row_major);
    }
    __syncwarp();
  }

  if (valid) {
    const int64_t row = sq.q_begin + q0 + row_local;
    const float inv = 1.0f / l;
    const int64_t obase = (row * heads + h) * D + dcol0;
    for (int c = 0; c < D / 2; ++c) St(out, dto, obase + c, o_w[r * L::kOPitch + dcol0 + c] * inv);
    if (lse != nullptr && (lane & 1) == 0) lse[row * heads + h] = m + logf(l);
  }
}

// Adds scale * acc (this warp's 16 rows x D) into a [rows, heads_or_kvh, D] tensor at rows row0 + r
// (r < rows_valid), column block (head * D); or stores it when !accumulate. `scratch` is the warp's
// 16 x kSPitch fp32 score tile.
template <int D>
__device__ __forceinline__ void WarpWriteRows(const FragAcc (&acc)[D / 16], float* scratch, void* dst, int dt,
                                              int64_t row0, int rows_valid, int64_t stride, int64_t col,
                                              float scale, bool accumulate) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int n = 0; n < D / 16; ++n) {
    wmma::store_matrix_sync(scratch, acc[n], kSPitch, wmma::mem_row_major);
    __syncwarp();
    for (int e = lane; e < 16 * 16; e += 32) {
      const int rr = e / 16, cc = e % 16;
      if (rr >= rows_valid) continue;
      const int64_t i = (row0 + rr) * stride + col + n * 16 + cc;
      const float v = scale * scratch[rr * kSPitch + cc];
      if (accumulate) {
        AtomicAddTo(dst, dt, i, v);
      } else {
        St(dst, dt, i, v);
      }
    }
    __syncwarp();
  }
}

// dk/dv of one 64-key tile of kv head g: over every query head of the group and every query tile that
// sees these keys.
template <int D>
__global__ void __launch_bounds__(kThreads)
TiledBackwardKvKernel(const bf16* q, const AttnSeqDesc* seqs, const AttnTile* tiles, int heads, int kv_heads,
                      float scale, const float* lse, const float* dvec, const bf16* dout, int dtdkv) {
  using L = Layout<D>;
  constexpr int P = L::kPitch;
  TESSERA_DYNAMIC_SHARED(smem);
  SharedCarver carve{smem};  // kKvBytes
  bf16* Qs = carve.Take<bf16>(L::kTileBytes);
  bf16* dOs = carve.Take<bf16>(L::kTileBytes);
  bf16* Ks = carve.Take<bf16>(L::kTileBytes);
  bf16* Vs = carve.Take<bf16>(L::kTileBytes);
  float* St_ = carve.Take<float>(L::kScoreBytes);  // S^T  [warp][16 keys][64 queries]
  float* dPt = carve.Take<float>(L::kScoreBytes);  // dP^T
  bf16* Pt = carve.Take<bf16>(L::kProbBytes);
  bf16* dSt = carve.Take<bf16>(L::kProbBytes);
  float* lse_s = carve.Take<float>(kTile * 4);
  float* d_s = carve.Take<float>(kTile * 4);

  const AttnTile tile = tiles[blockIdx.x];
  const AttnSeqDesc sq = seqs[tile.seq];
  const int g = blockIdx.y, group = heads / kv_heads;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t base = sq.kv_len - sq.q_len, k0 = tile.offset;
  const int krows = TileRows(sq.kv_len - k0);
  const int r = lane >> 1, col0 = (lane & 1) * (kTile / 2);
  const int key_local = warp * kWarpRows + r;
  const int64_t j = k0 + key_local;
  float* s_w = St_ + warp * kWarpRows * kSPitch;
  float* dp_w = dPt + warp * kWarpRows * kSPitch;
  bf16* p_w = Pt + warp * kWarpRows * kPPitch;
  bf16* ds_w = dSt + warp * kWarpRows * kPPitch;

  LoadTile<D>(Ks, sq.k, k0, krows, static_cast<int64_t>(kv_heads) * D, static_cast<int64_t>(g) * D);
  LoadTile<D>(Vs, sq.v, k0, krows, static_cast<int64_t>(kv_heads) * D, static_cast<int64_t>(g) * D);

  FragAcc dk[D / 16], dv[D / 16];
#pragma unroll
  for (int n = 0; n < D / 16; ++n) {
    wmma::fill_fragment(dk[n], 0.0f);
    wmma::fill_fragment(dv[n], 0.0f);
  }
  // The first query that sees key k0 (without a window every key < kv_len is seen by the last query),
  // and one past the last query that sees the tile's last key (with a window, position
  // k0 + krows - 1 + window - 1).
  const int64_t q_first = k0 > base ? k0 - base : 0;
  int64_t q_end = sq.q_len;
  if (sq.window > 0 && k0 + krows - 1 + sq.window - base < q_end) q_end = k0 + krows - 1 + sq.window - base;
  for (int hh = 0; hh < group; ++hh) {
    const int h = g * group + hh;
    for (int64_t qt = q_first; qt < q_end; qt += kTile) {
      const int rows = TileRows(sq.q_len - qt);
      __syncthreads();  // the previous query tile is consumed (and, first time, K/V are loaded)
      LoadTile<D>(Qs, q, sq.q_begin + qt, rows, static_cast<int64_t>(heads) * D, static_cast<int64_t>(h) * D);
      LoadTile<D>(dOs, dout, sq.q_begin + qt, rows, static_cast<int64_t>(heads) * D, static_cast<int64_t>(h) * D);
      for (int t = threadIdx.x; t < kTile; t += kThreads) {
        const int64_t idx = (sq.q_begin + qt + t) * heads + h;
        lse_s[t] = t < rows ? lse[idx] : 0.0f;
        d_s[t] = t < rows ? dvec[idx] : 0.0f;
      }
      __syncthreads();

      {
        FragA rows[D / 16];  // reloaded per query tile: dk/dv already hold 2 x D / 2 registers
        LoadRowFragments<D>(Ks + warp * kWarpRows * P, rows);
        WarpScores<D>(rows, Qs, s_w);  // S^T = K Q^T
        LoadRowFragments<D>(Vs + warp * kWarpRows * P, rows);
        WarpScores<D>(rows, dOs, dp_w);  // dP^T = V dO^T
      }
      __syncwarp();
#pragma unroll 8
      for (int c = 0; c < kTile / 2; ++c) {
        const int col = col0 + c;
        const int64_t qpos = base + qt + col;
        const bool ok = col < rows && key_local < krows && j <= qpos && (sq.window == 0 || j > qpos - sq.window);
        const float p = ok ? expf(s_w[r * kSPitch + col] * scale - lse_s[col]) : 0.0f;
        const float ds = p * (dp_w[r * kSPitch + col] - d_s[col]);
        p_w[r * kPPitch + col] = __float2bfloat16_rn(p);
        ds_w[r * kPPitch + col] = __float2bfloat16_rn(ds);
      }
      __syncwarp();
      WarpAccumulate<D>(p_w, dOs, dv);   // dV += P^T dO
      WarpAccumulate<D>(ds_w, Qs, dk);   // dK += dS^T Q
    }
  }
  const int rows_valid = krows - warp * kWarpRows;  // may be <= 0: nothing to write
  WarpWriteRows<D>(dk, s_w, sq.dk, dtdkv, k0 + warp * kWarpRows, rows_valid, static_cast<int64_t>(kv_heads) * D,
                   static_cast<int64_t>(g) * D, scale, true);
  WarpWriteRows<D>(dv, s_w, sq.dv, dtdkv, k0 + warp * kWarpRows, rows_valid, static_cast<int64_t>(kv_heads) * D,
                   static_cast<int64_t>(g) * D, 1.0f, true);
}

// dq of one 64-query tile of head h: over every key tile its queries see.
template <int D>
__global__ void __launch_bounds__(kThreads)
TiledBackwardQKernel(const bf16* q, const AttnSeqDesc* seqs, const AttnTile* tiles, int heads, int kv_heads,
                     float scale, const float* lse, const float* dvec, const bf16* dout, void* dq, int dtdq) {
  using L = Layout<D>;
  constexpr int P = L::kPitch;
  TESSERA_DYNAMIC_SHARED(smem);
  SharedCarver carve{smem};  // kDqBytes
  bf16* Qs = carve.Take<bf16>(L::kTileBytes);
  bf16* dOs = carve.Take<bf16>(L::kTileBytes);
  bf16* Ks = carve.Take<bf16>(L::kTileBytes);
  bf16* Vs = carve.Take<bf16>(L::kTileBytes);
  float* Ss = carve.Take<float>(L::kScoreBytes);
  float* dPs = carve.Take<float>(L::kScoreBytes);
  bf16* dSs = carve.Take<bf16>(L::kProbBytes);

  const QueryTileLane t = LocateQueryTile(seqs, tiles, heads, kv_heads);
  const AttnSeqDesc& sq = t.sq;
  const int h = t.h, g = t.g, warp = t.warp, rows = t.rows, r = t.r, col0 = t.col0;
  const int row_local = t.row_local;
  const bool valid = t.valid;
  const int64_t q0 = t.q0, nkeys = t.nkeys;
  const int64_t stat = (sq.q_begin + q0 + row_local) * heads + h;
  const float row_lse = valid ? lse[stat] : 0.0f, row_d = valid ? dvec[stat] : 0.0f;
  float* s_w = Ss + warp * kWarpRows * kSPitch;
  float* dp_w = dPs + warp * kWarpRows * kSPitch;
  bf16* ds_w = dSs + warp * kWarpRows * kPPitch;

  LoadTile<D>(Qs, q, sq.q_begin + q0, rows, static_cast<int64_t>(heads) * D, static_cast<int64_t>(h) * D);
  LoadTile<D>(dOs, dout, sq.q_begin + q0, rows, static_cast<int64_t>(heads) * D, static_cast<int64_t>(h) * D);
  __syncthreads();
  FragA qa[D / 16], doa[D / 16];  // this warp's 16 query rows of Q and dO, kept for every key tile
  LoadRowFragments<D>(Qs + warp * kWarpRows * P, qa);
  LoadRowFragments<D>(dOs + warp * kWarpRows * P, doa);
  FragAcc acc[D / 16];
#pragma unroll
  for (int n = 0; n < D / 16; ++n) wmma::fill_fragment(acc[n], 0.0f);

  for (int64_t k0 = t.k_begin; k0 < nkeys; k0 += kTile) {
    const int krows = TileRows(sq.kv_len - k0);
    __syncthreads();  // every warp is done with the previous K/V tile
    LoadTile<D>(Ks, sq.k, k0, krows, static_cast<int64_t>(kv_heads) * D, static_cast<int64_t>(g) * D);
    LoadTile<D>(Vs, sq.v, k0, krows, static_cast<int64_t>(kv_heads) * D, static_cast<int64_t>(g) * D);
    __syncthreads();

    WarpScores<D>(qa, Ks, s_w);    // S = Q K^T
    WarpScores<D>(doa, Vs, dp_w);  // dP = dO V^T
    __syncwarp();
#pragma unroll 8
    for (int c = 0; c < kTile / 2; ++c) {
      const int col = col0 + c;
      const bool ok = t.Sees(k0 + col);
      const float p = ok ? expf(s_w[r * kSPitch + col] * scale - row_lse) : 0.0f;
      ds_w[r * kPPitch + col] = __float2bfloat16_rn(p * (dp_w[r * kSPitch + col] - row_d));
    }
    __syncwarp();
    WarpAccumulate<D>(ds_w, Ks, acc);  // dQ += dS K
  }
  WarpWriteRows<D>(acc, s_w, dq, dtdq, sq.q_begin + q0 + warp * kWarpRows, rows - warp * kWarpRows,
                   static_cast<int64_t>(heads) * D, static_cast<int64_t>(h) * D, scale, false);
}

// d[i, h] = dout[i, h, :] . out[i, h, :] for rows in a sequence, 0 elsewhere; one warp per (row, head),
// warps striding over (row, head) pairs (the loop is warp-uniform, so WarpSum sees all 32 lanes).
__global__ void RowDotsKernel(const void* out, int dto, const void* dout, int dtdo, const int32_t* row_seq,
                              int64_t nq, int heads, int head_dim, float* d) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * blockDim.x / 32;
  for (int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; w < nq * heads; w += warps) {
    float s = 0.0f;
    if (row_seq[w / heads] >= 0) {
      for (int c = lane; c < head_dim; c += 32) {
        s = fmaf(Ld(out, dto, w * head_dim + c), Ld(dout, dtdo, w * head_dim + c), s);
      }
    }
    s = WarpSum(s);
    if (lane == 0) d[w] = s;
  }
}

}  // namespace
}  // namespace tessera::cuda_kernels::tiled_attention
