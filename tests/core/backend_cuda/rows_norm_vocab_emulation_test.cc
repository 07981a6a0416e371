// The row kernels (core/backend/cuda/cuda_rows_kernels.cuh) and the row-normalizing kernels
// (core/backend/cuda/cuda_norm_vocab_kernels.cuh), their own source run on the host through emulation/,
// against the CPU backend's ops on the same inputs:
//  - rows: GatherRows (with and without scale, f32 and bf16) and EmbeddingForward (GatherRowsKernel);
//    ScatterAddRows (with and without scale, f32 and bf16) and EmbeddingBackward (IotaKernel, a stable
//    sort by destination row, ScatterAddSortedKernel: CUB's radix sort on the GPU, std::stable_sort
//    here); RowDotGather; CheckIndices; RouterForward (ties within and across lanes, E below and above
//    a warp, k up to E, normalize on/off) and RouterBackward (normalize on/off); out-of-range indices
//    set the kernel's error bit and leave the row untouched.
//  - norm/vocab: RmsNormForward (f32, bf16) and RmsNormBackward (dx, and dweight accumulated over one and
//    several 64-row chunks); Rope forward and inverse; LogSoftmax (with -inf entries); CrossEntropy
//    forward/backward with ignored targets (< 0), and a target >= V setting the error bit.
// Grids and blocks are the launchers' (cuda_rows.cu / cuda_norm_vocab.cu: their RowThreads / RowBlocks
// are copied below), on small problems so there are few blocks; where a test runs a grid smaller than
// the launcher's, it says so (the kernels' grid-stride loops then give each block several rows, as a
// launch with more rows than the grid allows would).
//
// Tolerances. Exact equality where the kernel and the CPU backend compute the same operations in the
// same order: gathers, scatter-adds (sums of exact bf16 x bf16 products, run in increasing source row on
// both), top-k indices, ignored rows, and bf16 gathers/scatters (both round the same f32 value once).
// Elsewhere the two sum in different orders (the kernels: per-thread strides, then warp and block
// trees; the CPU: sequential or SIMD-lane sums); the emulation's rsqrtf is 1 / sqrtf (the GPU's is
// approximate: that is not checked here). Bounds, |got - want| <=:
//   RowDotGather                       2e-6 * sum_c |a_c b_c|
//   Router probs / topk_w              1e-6 * |want|              RouterBackward   1e-7 + 1e-6 * |want|
//   RmsNorm out, rstd                  1e-6 * |want|
//   RmsNorm dx                         5e-7 * (|want| + the row's largest |dx|)
//   RmsNorm dweight                    1e-6 * (|dweight before| + sum_n |g x rstd|)
//   RmsNorm bf16 out                   one bf16 rounding step (2^-8 |want|): f32 values a few ulp apart
//                                      may round to neighbouring bf16 values
//   Rope                               5e-7 (|x| <= 1; the CPU rounds cos/sin to f32, the kernel keeps f64)
//   LogSoftmax, CE loss, lse           5e-7 * (1 + |want|)        CE dlogits       2e-7
// (each at least 3x the largest difference these inputs give).
// core_backend_cuda_test checks the compiled kernels on a GPU.
#include "tests/core/backend_cuda/emulation/cuda_emulation.h"  // first: the kernels' CUDA built-ins

#include <algorithm>
#include <atomic>
#include <bit>
#include <climits>
#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>


#include "core/backend/backend.h"
#include "core/backend/cuda/cuda_norm_vocab_kernels.cuh"
#include "core/backend/cuda/cuda_rows_kernels.cuh"
#include "gtest/gtest.h"
#include "tests/core/backend_cuda/emulation/emulation_test_util.h"

namespace tessera::testing {
namespace {

namespace rk = cuda_kernels::rows;
namespace nk = cuda_kernels::norm_vocab;
using cuda_kernels::GridFor;
using cuda_kernels::kBF16;
using cuda_kernels::kErrEmbeddingIndex;
using cuda_kernels::kErrGatherIndex;
using cuda_kernels::kErrRowDotIndex;
using cuda_kernels::kErrScatterIndex;
using cuda_kernels::kErrTargetIndex;
using cuda_kernels::kF32;
using bf16 = __nv_bfloat16;

// The launchers' geometry (host helpers of cuda_rows.cu and cuda_norm_vocab.cu, copied).
int RowsThreads(int64_t d) { return d >= 256 ? 256 : (d >= 128 ? 128 : (d >= 64 ? 64 : 32)); }  // cuda_rows.cu
int NormThreads(int64_t d) {  // cuda_norm_vocab.cu
  return d >= 1024 ? 512 : (d >= 256 ? 256 : (d >= 128 ? 128 : (d >= 64 ? 64 : 32)));
}
unsigned RowBlocks(int64_t rows) {
  return static_cast<unsigned>(rows < 1 ? 1 : (rows > (1LL << 31) - 1 ? (1LL << 31) - 1 : rows));
}

constexpr float kSentinel = 99.0f;

// Values exactly representable in bf16 (so bf16 and f32 runs see the same inputs, and products of two
// are exact in f32).
std::vector<float> Values(size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  return cuda_emulation::RandomBf16Exact(n, rng, lo, hi);
}

std::vector<int32_t> Indices(size_t n, int32_t bound, std::mt19937& rng) {
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = static_cast<int32_t>(rng() % static_cast<uint32_t>(bound));
  return v;
}

std::vector<float> ToF32(const std::vector<bf16>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = __bfloat162float(v[i]);
  return r;
}

// The CPU backend and host <-> tensor helpers.
struct Cpu {
  Cpu() {
    auto b = MakeBackend("cpu");
    EXPECT_TRUE(b.ok()) << b.status();
    be = std::move(*b);
  }
  Tensor F32(const std::vector<float>& v, std::vector<int64_t> shape) { return *be->FromHost(v, shape); }
  Tensor I32(const std::vector<int32_t>& v, std::vector<int64_t> shape) { return *be->FromHost(v, shape); }
  Tensor Bf16(const std::vector<float>& v, std::vector<int64_t> shape) {
    Tensor f = F32(v, shape);
    Tensor t = *be->Alloc(shape, DType::kBF16);
    EXPECT_TRUE(be->Copy(f, t).ok());
    return t;
  }
  std::vector<float> Get(const Tensor& t) { return *be->ToHostF32(t); }
  std::vector<int32_t> GetI32(const Tensor& t) { return *be->ToHostI32(t); }
  std::unique_ptr<Backend> be;
};

// |got[i] - want[i]| <= abs + rel * |want[i]| (equal values, infinities included, always pass).
void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, float abs, float rel,
                const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] == want[i]) continue;
    ASSERT_LE(std::fabs(got[i] - want[i]), abs + rel * std::fabs(want[i]))
        << what << "[" << i << "]: got " << got[i] << ", want " << want[i];
  }
}

// ---- GatherRows / EmbeddingForward ------------------------------------------------------------------------

TEST(RowsEmulation, GatherRowsAndEmbeddingForward) {
  Cpu cpu;
  Backend& be = *cpu.be;
  std::mt19937 rng(1);
  // d = 40 > 32 threads: threads stride over a row.
  const int64_t n_src = 9, d = 40, m = 8;
  const std::vector<float> src = Values(n_src * d, rng), scale = Values(m, rng, -2.0f, 2.0f);
  const std::vector<int32_t> idx = Indices(m, n_src, rng);
  const Tensor t_src = cpu.F32(src, {n_src, d}), t_idx = cpu.I32(idx, {m}), t_scale = cpu.F32(scale, {m});
  const dim3 grid(RowBlocks(m));
  const unsigned threads = RowsThreads(d);

  std::vector<float> gathered;  // without scale, for the bad-index run
  for (const bool use_scale : {false, true}) {
    SCOPED_TRACE(use_scale ? "scale" : "no scale");
    Tensor t_dst = *be.Alloc({m, d}, DType::kF32);
    ASSERT_TRUE(be.GatherRows(t_src, t_idx, use_scale ? &t_scale : nullptr, t_dst).ok());
    std::vector<float> dst(m * d, kSentinel);
    int err = 0;
    cuda_emulation::Launch(grid, threads, [&] {
      rk::GatherRowsKernel(src.data(), kF32, n_src, idx.data(), use_scale ? scale.data() : nullptr, dst.data(), kF32,
                           m, d, kErrGatherIndex, &err);
    });
    EXPECT_EQ(err, 0);
    EXPECT_EQ(dst, cpu.Get(t_dst));
    if (!use_scale) gathered = dst;
  }

  // EmbeddingForward is the gather without scale, with its own error bit.
  {
    Tensor t_out = *be.Alloc({m, d}, DType::kF32);
    ASSERT_TRUE(be.EmbeddingForward(t_src, t_idx, t_out).ok());
    std::vector<float> out(m * d, kSentinel);
    int err = 0;
    cuda_emulation::Launch(grid, threads, [&] {
      rk::GatherRowsKernel(src.data(), kF32, n_src, idx.data(), nullptr, out.data(), kF32, m, d, kErrEmbeddingIndex,
                           &err);
    });
    EXPECT_EQ(err, 0);
    EXPECT_EQ(out, cpu.Get(t_out));
  }

  // bf16 storage: bf16 -> bf16 with scale (one rounding of the same f32 product on both), and a bf16
  // table into an f32 output (EmbeddingForward).
  {
    const Tensor b_src = cpu.Bf16(src, {n_src, d});
    Tensor b_dst = *be.Alloc({m, d}, DType::kBF16);
    ASSERT_TRUE(be.GatherRows(b_src, t_idx, &t_scale, b_dst).ok());
    const std::vector<bf16> src_h = cuda_emulation::ToBf16(src);
    std::vector<bf16> dst(m * d, __float2bfloat16_rn(kSentinel));
    int err = 0;
    cuda_emulation::Launch(grid, threads, [&] {
      rk::GatherRowsKernel(src_h.data(), kBF16, n_src, idx.data(), scale.data(), dst.data(), kBF16, m, d,
                           kErrGatherIndex, &err);
    });
    EXPECT_EQ(err, 0);
    EXPECT_EQ(ToF32(dst), cpu.Get(b_dst));

    Tensor t_out = *be.Alloc({m, d}, DType::kF32);
    ASSERT_TRUE(be.EmbeddingForward(b_src, t_idx, t_out).ok());
    std::vector<float> out(m * d, kSentinel);
    cuda_emulation::Launch(grid, threads, [&] {
      rk::GatherRowsKernel(src_h.data(), kBF16, n_src, idx.data(), nullptr, out.data(), kF32, m, d,
                           kErrEmbeddingIndex, &err);
    });
    EXPECT_EQ(err, 0);
    EXPECT_EQ(out, cpu.Get(t_out));
  }

  // Out-of-range indices (-1 and n_src): the error bit, those rows untouched, the others gathered. A
  // grid of 3 blocks (the launcher's is m): the grid-stride loop over rows.
  {
    std::vector<int32_t> bad = idx;
    bad[3] = -1;
    bad[7] = static_cast<int32_t>(n_src);
    std::vector<float> dst(m * d, kSentinel);
    int err = 0;
    cuda_emulation::Launch(dim3(3), threads, [&] {
      rk::GatherRowsKernel(src.data(), kF32, n_src, bad.data(), nullptr, dst.data(), kF32, m, d, kErrGatherIndex,
                           &err);
    });
    EXPECT_EQ(err, kErrGatherIndex);
    std::vector<float> want = gathered;
    std::fill_n(want.begin() + 3 * d, d, kSentinel);
    std::fill_n(want.begin() + 7 * d, d, kSentinel);
    EXPECT_EQ(dst, want);
  }
}

// ---- ScatterAddRows / EmbeddingBackward -------------------------------------------------------------------

// The GPU path of ScatterAddRows: IotaKernel (rows_in[i] = i), CUB's stable radix sort of the pairs
// (idx[i], rows_in[i]) over all 32 key bits (signed keys in numeric order) -- here std::stable_sort of the
// positions by key, which gives the same permutation -- then ScatterAddSortedKernel over the sorted pairs.
template <typename T>
int EmulatedScatterAdd(const std::vector<T>& src, int dts, const std::vector<int32_t>& idx, const float* scale,
                       std::vector<T>& dst, int dtd, int64_t n_dst, int64_t d, int err_bit) {
  const int64_t m = static_cast<int64_t>(idx.size());
  std::vector<int32_t> rows_in(m, -1);
  cuda_emulation::Launch(dim3(GridFor(m, 256)), 256, [&] { rk::IotaKernel(rows_in.data(), m); });
  std::vector<int64_t> order(m);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return idx[a] < idx[b]; });
  std::vector<int32_t> keys(m), rows(m);
  for (int64_t p = 0; p < m; ++p) {
    keys[p] = idx[order[p]];
    rows[p] = rows_in[order[p]];
  }
  int err = 0;
  cuda_emulation::Launch(dim3(RowBlocks(m)), RowsThreads(d), [&] {
    rk::ScatterAddSortedKernel(src.data(), dts, keys.data(), rows.data(), scale, dst.data(), dtd, n_dst, m, d,
                               err_bit, &err);
  });
  return err;
}

TEST(RowsEmulation, ScatterAddRowsAndEmbeddingBackward) {
  Cpu cpu;
  Backend& be = *cpu.be;
  std::mt19937 rng(2);
  // 13 source rows into 6 destination rows: runs of several sources per row, and destination rows that
  // receive nothing.
  const int64_t n_dst = 6, d = 40, m = 13;
  const std::vector<float> src = Values(m * d, rng), dst0 = Values(n_dst * d, rng), scale = Values(m, rng, -2, 2);
  const std::vector<int32_t> idx = Indices(m, n_dst - 1, rng);  // row n_dst - 1 never receives
  bool apart = false;  // the sort matters: some row receives sources that are not adjacent
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = i + 2; j < m; ++j) apart |= idx[i] == idx[j];
  }
  ASSERT_TRUE(apart);
  const Tensor t_src = cpu.F32(src, {m, d}), t_idx = cpu.I32(idx, {m}), t_scale = cpu.F32(scale, {m});

  for (const bool use_scale : {false, true}) {
    SCOPED_TRACE(use_scale ? "scale" : "no scale");
    Tensor t_dst = cpu.F32(dst0, {n_dst, d});  // accumulates
    ASSERT_TRUE(be.ScatterAddRows(t_src, t_idx, use_scale ? &t_scale : nullptr, t_dst).ok());
    std::vector<float> dst = dst0;
    EXPECT_EQ(EmulatedScatterAdd(src, kF32, idx, use_scale ? scale.data() : nullptr, dst, kF32, n_dst, d,
                                 kErrScatterIndex),
              0);
    EXPECT_EQ(dst, cpu.Get(t_dst));
  }

  // EmbeddingBackward: the same kernels without scale, with the embedding's error bit.
  {
    Tensor t_dtable = cpu.F32(dst0, {n_dst, d});
    ASSERT_TRUE(be.EmbeddingBackward(t_idx, t_src, t_dtable).ok());
    std::vector<float> dtable = dst0;
    EXPECT_EQ(EmulatedScatterAdd(src, kF32, idx, nullptr, dtable, kF32, n_dst, d, kErrEmbeddingIndex), 0);
    EXPECT_EQ(dtable, cpu.Get(t_dtable));
  }

  // bf16 src and dst: each destination element is summed in f32 in the same order and rounded once.
  {
    const Tensor b_src = cpu.Bf16(src, {m, d});
    Tensor b_dst = cpu.Bf16(dst0, {n_dst, d});
    ASSERT_TRUE(be.ScatterAddRows(b_src, t_idx, &t_scale, b_dst).ok());
    const std::vector<bf16> src_h = cuda_emulation::ToBf16(src);
    std::vector<bf16> dst = cuda_emulation::ToBf16(dst0);
    EXPECT_EQ(EmulatedScatterAdd(src_h, kBF16, idx, scale.data(), dst, kBF16, n_dst, d, kErrScatterIndex), 0);
    EXPECT_EQ(ToF32(dst), cpu.Get(b_dst));
  }

  // Out-of-range indices (-2 sorts first, n_dst last): the error bit, and every valid source still added,
  // in order (the CPU backend, which rejects bad indices, runs on the valid sources only).
  {
    std::vector<int32_t> bad = idx;
    bad[0] = -2;
    bad[5] = -2;
    bad[11] = static_cast<int32_t>(n_dst);
    std::vector<float> valid_src, valid_scale;
    std::vector<int32_t> valid_idx;
    for (int64_t i = 0; i < m; ++i) {
      if (bad[i] < 0 || bad[i] >= n_dst) continue;
      valid_idx.push_back(bad[i]);
      valid_scale.push_back(scale[i]);
      valid_src.insert(valid_src.end(), src.begin() + i * d, src.begin() + (i + 1) * d);
    }
    const int64_t mv = static_cast<int64_t>(valid_idx.size());
    Tensor t_dst = cpu.F32(dst0, {n_dst, d});
    const Tensor t_vscale = cpu.F32(valid_scale, {mv});
    ASSERT_TRUE(be.ScatterAddRows(cpu.F32(valid_src, {mv, d}), cpu.I32(valid_idx, {mv}), &t_vscale, t_dst).ok());
    std::vector<float> dst = dst0;
    EXPECT_EQ(EmulatedScatterAdd(src, kF32, bad, scale.data(), dst, kF32, n_dst, d, kErrScatterIndex),
              kErrScatterIndex);
    EXPECT_EQ(dst, cpu.Get(t_dst));
  }
}

// ---- RowDotGather -----------------------------------------------------------------------------------------

TEST(RowsEmulation, RowDotGather) {
  Cpu cpu;
  Backend& be = *cpu.be;
  std::mt19937 rng(3);
  // d = 150: 128 threads (4 warps, so BlockSum crosses warps) and a row longer than the block.
  const int64_t n_b = 5, d = 150, m = 6;
  const std::vector<float> a = Values(m * d, rng), b = Values(n_b * d, rng);
  const std::vector<int32_t> idx = Indices(m, n_b, rng);
  Tensor t_out = *be.Alloc({m}, DType::kF32);
  ASSERT_TRUE(be.RowDotGather(cpu.F32(a, {m, d}), cpu.F32(b, {n_b, d}), cpu.I32(idx, {m}), t_out).ok());
  const std::vector<float> want = cpu.Get(t_out);

  std::vector<float> out(m, kSentinel);
  int err = 0;
  cuda_emulation::Launch(dim3(RowBlocks(m)), RowsThreads(d), [&] {
    rk::RowDotGatherKernel(a.data(), kF32, b.data(), kF32, n_b, idx.data(), out.data(), kF32, m, d, &err);
  });
  EXPECT_EQ(err, 0);
  for (int64_t i = 0; i < m; ++i) {
    float mag = 0.0f;
    for (int64_t c = 0; c < d; ++c) mag += std::fabs(a[i * d + c] * b[idx[i] * d + c]);
    EXPECT_NEAR(out[i], want[i], 2e-6f * mag) << "out[" << i << "]";
  }

  // An out-of-range index: the error bit, that output untouched, the others as before. A grid of 2
  // blocks (the launcher's is m): each block runs several rows, and skips the bad one with no barrier.
  std::vector<int32_t> bad = idx;
  bad[2] = static_cast<int32_t>(n_b);
  std::vector<float> out2(m, kSentinel);
  err = 0;
  cuda_emulation::Launch(dim3(2), RowsThreads(d), [&] {
    rk::RowDotGatherKernel(a.data(), kF32, b.data(), kF32, n_b, bad.data(), out2.data(), kF32, m, d, &err);
  });
  EXPECT_EQ(err, kErrRowDotIndex);
  std::vector<float> want2 = out;
  want2[2] = kSentinel;
  EXPECT_EQ(out2, want2);
}

// ---- CheckIndices -----------------------------------------------------------------------------------------

TEST(RowsEmulation, CheckIndices) {
  std::mt19937 rng(4);
  const int64_t n = 300;  // 2 blocks
  const int32_t lo = 0, hi = 50;
  std::vector<int32_t> idx = Indices(n, hi, rng);
  const dim3 grid(std::min(GridFor(n, 256), 256u));  // the launcher's
  int flag = INT_MAX;
  cuda_emulation::Launch(grid, 256, [&] { rk::CheckIndicesKernel(idx.data(), n, lo, hi, &flag); });
  EXPECT_EQ(flag, INT_MAX);
  idx[277] = hi;
  idx[133] = lo - 1;
  idx[290] = -7;
  cuda_emulation::Launch(grid, 256, [&] { rk::CheckIndicesKernel(idx.data(), n, lo, hi, &flag); });
  EXPECT_EQ(flag, 133);  // the first bad position
}

// ---- Router -----------------------------------------------------------------------------------------------

struct RouterCase {
  int64_t e;
  int k;
  bool normalize;
};

// Logits [n, e]: random rows, a row of equal logits (top-k = experts 0..k-1), a row whose top three tie
// across lanes (experts 3, 10, 35 when e > 35) and whose next three tie too, and a row with ties elsewhere.
std::vector<float> RouterLogits(int64_t n, int64_t e, std::mt19937& rng) {
  std::vector<float> l = Values(n * e, rng, -3.0f, 3.0f);
  std::fill_n(l.begin() + 4 * e, e, 0.5f);
  float* r5 = l.data() + 5 * e;
  for (int64_t j : {3, 10, 35}) r5[j % e] = 4.0f;
  for (int64_t j : {39, 7, 20}) r5[j % e] = 3.5f;
  float* r6 = l.data() + 6 * e;
  r6[1 % e] = r6[(e - 1)] = r6[(e / 2)] = -0.25f;
  return l;
}

TEST(RowsEmulation, RouterForwardAndBackward) {
  Cpu cpu;
  Backend& be = *cpu.be;
  std::mt19937 rng(5);
  const int64_t n = 7;  // two blocks of 4 warps (one warp per row); the last warp has no row
  for (const RouterCase& rc : {RouterCase{40, 6, false}, RouterCase{40, 6, true}, RouterCase{8, 8, true}}) {
    const int64_t e = rc.e;
    const int k = rc.k;
    SCOPED_TRACE("E=" + std::to_string(e) + " k=" + std::to_string(k) + (rc.normalize ? " normalize" : ""));
    const std::vector<float> logits = RouterLogits(n, e, rng);
    const Tensor t_logits = cpu.F32(logits, {n, e});
    Tensor t_probs = *be.Alloc({n, e}, DType::kF32), t_idx = *be.Alloc({n, k}, DType::kI32),
           t_w = *be.Alloc({n, k}, DType::kF32);
    ASSERT_TRUE(be.RouterForward(t_logits, k, rc.normalize, t_probs, t_idx, t_w).ok());
    const std::vector<float> want_probs = cpu.Get(t_probs), want_w = cpu.Get(t_w);
    const std::vector<int32_t> want_idx = cpu.GetI32(t_idx);

    std::vector<float> probs(n * e, kSentinel), w(n * k, kSentinel);
    std::vector<int32_t> idx(n * k, -7);
    const dim3 grid(RowBlocks((n + rk::kRouterWarps - 1) / rk::kRouterWarps));
    cuda_emulation::Launch(grid, rk::kRouterWarps * 32, [&] {
      rk::RouterForwardKernel(logits.data(), kF32, n, static_cast<int>(e), k, rc.normalize, probs.data(), kF32,
                              idx.data(), w.data());
    });
    EXPECT_EQ(idx, want_idx);
    ExpectNear(probs, want_probs, 0.0f, 1e-6f, "probs");
    ExpectNear(w, want_w, 0.0f, 1e-6f, "topk_w");
    if (e > 35) {  // the ties: lower expert index first
      EXPECT_EQ(std::vector<int32_t>(idx.begin() + 4 * k, idx.begin() + 4 * k + 3), (std::vector<int32_t>{0, 1, 2}));
      EXPECT_EQ(std::vector<int32_t>(idx.begin() + 5 * k, idx.begin() + 5 * k + 6),
                (std::vector<int32_t>{3, 10, 35, 7, 20, 39}));
    }

    // Backward from the CPU forward's outputs.
    const std::vector<float> dw = Values(n * k, rng);
    const Tensor t_dw = cpu.F32(dw, {n, k});
    Tensor t_dlogits = *be.Alloc({n, e}, DType::kF32);
    ASSERT_TRUE(be.RouterBackward(t_probs, t_idx, t_w, rc.normalize, t_dw, t_dlogits).ok());
    std::vector<float> dlogits(n * e, kSentinel);
    cuda_emulation::Launch(grid, rk::kRouterWarps * 32, [&] {
      rk::RouterBackwardKernel(want_probs.data(), kF32, want_idx.data(), want_w.data(), rc.normalize, dw.data(),
                               dlogits.data(), kF32, n, static_cast<int>(e), k);
    });
    ExpectNear(dlogits, cpu.Get(t_dlogits), 1e-7f, 1e-6f, "dlogits");
  }
}

// ---- RMSNorm ----------------------------------------------------------------------------------------------

TEST(NormVocabEmulation, RmsNormForward) {
  Cpu cpu;
  Backend& be = *cpu.be;
  std::mt19937 rng(6);
  const float eps = 1e-5f;
  // d = 70: 64 threads (2 warps), a row longer than the block; d = 40: one warp.
  for (const int64_t d : {int64_t{70}, int64_t{40}}) {
    const int64_t n = 5;
    SCOPED_TRACE("d=" + std::to_string(d));
    const std::vector<float> x = Values(n * d, rng, -3, 3), w = Values(d, rng, 0.5f, 1.5f);
    const Tensor t_x = cpu.F32(x, {n, d}), t_w = cpu.F32(w, {d});
    Tensor t_out = *be.Alloc({n, d}, DType::kF32), t_rstd = *be.Alloc({n}, DType::kF32);
    ASSERT_TRUE(be.RmsNormForward(t_x, t_w, eps, t_out, &t_rstd).ok());
    const std::vector<float> want = cpu.Get(t_out), want_rstd = cpu.Get(t_rstd);

    // The launcher's grid (n blocks), then 2 blocks (the grid-stride loop over rows): the same values.
    std::vector<float> first;
    for (const unsigned blocks : {RowBlocks(n), 2u}) {
      std::vector<float> out(n * d, kSentinel), rstd(n, kSentinel);
      cuda_emulation::Launch(dim3(blocks), NormThreads(d), [&] {
        nk::RmsNormForwardKernel(x.data(), kF32, w.data(), kF32, eps, out.data(), kF32, rstd.data(), n, d);
      });
      ExpectNear(out, want, 0.0f, 1e-6f, "out");
      ExpectNear(rstd, want_rstd, 0.0f, 1e-6f, "rstd");
      if (first.empty()) {
        first = out;
      } else {
        EXPECT_EQ(out, first);
      }
    }

    // bf16 x, weight and out (rstd stays f32).
    const Tensor b_x = cpu.Bf16(x, {n, d}), b_w = cpu.Bf16(w, {d});
    Tensor b_out = *be.Alloc({n, d}, DType::kBF16);
    ASSERT_TRUE(be.RmsNormForward(b_x, b_w, eps, b_out, &t_rstd).ok());
    const std::vector<bf16> xh = cuda_emulation::ToBf16(x), wh = cuda_emulation::ToBf16(w);
    std::vector<bf16> out(n * d, __float2bfloat16_rn(kSentinel));
    std::vector<float> rstd(n, kSentinel);
    cuda_emulation::Launch(dim3(RowBlocks(n)), NormThreads(d), [&] {
      nk::RmsNormForwardKernel(xh.data(), kBF16, wh.data(), kBF16, eps, out.data(), kBF16, rstd.data(), n, d);
    });
    ExpectNear(ToF32(out), cpu.Get(b_out), 0.0f, 1.0f / 256, "bf16 out");
    ExpectNear(rstd, cpu.Get(t_rstd), 0.0f, 1e-6f, "bf16 rstd");
  }
}

TEST(NormVocabEmulation, RmsNormBackward) {
  Cpu cpu;
  Backend& be = *cpu.be;
  std::mt19937 rng(7);
  const float eps = 1e-5f;
  // (3, 300): dx with 256 threads per row, dweight in one 64-row chunk over two 256-column blocks (the
  // second partly past d). (130, 40): dweight in three chunks (the last partial), so three atomic adds per
  // column; dx with a grid of 4 blocks (the launcher's is 130; the grid-stride loop over rows).
  struct Case {
    int64_t n, d;
    unsigned dx_blocks;
  };
  for (const Case c : {Case{3, 300, 3}, Case{130, 40, 4}}) {
    const int64_t n = c.n, d = c.d;
    SCOPED_TRACE("n=" + std::to_string(n) + " d=" + std::to_string(d));
    const std::vector<float> x = Values(n * d, rng, -3, 3), w = Values(d, rng, 0.5f, 1.5f), g = Values(n * d, rng),
                             dw0 = Values(d, rng);
    const Tensor t_x = cpu.F32(x, {n, d}), t_w = cpu.F32(w, {d}), t_g = cpu.F32(g, {n, d});
    Tensor t_out = *be.Alloc({n, d}, DType::kF32), t_rstd = *be.Alloc({n}, DType::kF32);
    ASSERT_TRUE(be.RmsNormForward(t_x, t_w, eps, t_out, &t_rstd).ok());
    const std::vector<float> rstd = cpu.Get(t_rstd);
    Tensor t_dx = *be.Alloc({n, d}, DType::kF32), t_dw = cpu.F32(dw0, {d});
    ASSERT_TRUE(be.RmsNormBackward(t_x, t_w, t_rstd, t_g, t_dx, &t_dw).ok());
    const std::vector<float> want_dx = cpu.Get(t_dx), want_dw = cpu.Get(t_dw);

    std::vector<float> dx(n * d, kSentinel), dw = dw0;
    cuda_emulation::Launch(dim3(c.dx_blocks), NormThreads(d), [&] {
      nk::RmsNormBackwardDxKernel(x.data(), kF32, w.data(), kF32, rstd.data(), g.data(), kF32, dx.data(), kF32, n, d);
    });
    const int64_t chunks = (n + nk::kDwRowsPerChunk - 1) / nk::kDwRowsPerChunk;
    const dim3 dw_grid(static_cast<unsigned>((d + 255) / 256), static_cast<unsigned>(std::min<int64_t>(chunks, 65535)));
    cuda_emulation::Launch(dw_grid, 256, [&] {
      nk::RmsNormBackwardDwKernel(x.data(), kF32, rstd.data(), g.data(), kF32, dw.data(), kF32, n, d);
    });
    for (int64_t r = 0; r < n; ++r) {
      float row_max = 0.0f;
      for (int64_t j = 0; j < d; ++j) row_max = std::max(row_max, std::fabs(want_dx[r * d + j]));
      ExpectNear(std::vector<float>(dx.begin() + r * d, dx.begin() + (r + 1) * d),
                 std::vector<float>(want_dx.begin() + r * d, want_dx.begin() + (r + 1) * d), 5e-7f * row_max, 5e-7f,
                 "dx row " + std::to_string(r));
    }
    for (int64_t j = 0; j < d; ++j) {  // sums of n terms of either sign: relative to their magnitude
      float mag = std::fabs(dw0[j]);
      for (int64_t r = 0; r < n; ++r) mag += std::fabs(g[r * d + j] * x[r * d + j] * rstd[r]);
      EXPECT_NEAR(dw[j], want_dw[j], 1e-6f * mag) << "dweight[" << j << "]";
    }
  }
}

// ---- RoPE -------------------------------------------------------------------------------------------------

TEST(NormVocabEmulation, RopeForwardAndInverse) {
  Cpu cpu;
  Backend& be = *cpu.be;
  std::mt19937 rng(8);
  const int64_t n = 4, heads = 3, head_dim = 64, total = n * heads * (head_dim / 2);
  const float theta = 10000.0f;
  const std::vector<int32_t> pos = {0, 7, 4095, 100000};
  const std::vector<float> x = Values(n * heads * head_dim, rng);
  const Tensor t_pos = cpu.I32(pos, {n});
  const dim3 grid(GridFor(total, 256));  // the launcher's: 384 pairs, 2 blocks

  std::vector<float> forward;
  for (const bool inverse : {false, true}) {
    SCOPED_TRACE(inverse ? "inverse" : "forward");
    Tensor t_x = cpu.F32(x, {n, heads, head_dim});
    ASSERT_TRUE(be.Rope(t_x, t_pos, theta, inverse).ok());
    std::vector<float> got = x;
    cuda_emulation::Launch(grid, 256, [&] {
      nk::RopeKernel(got.data(), kF32, pos.data(), n, heads, head_dim, theta, inverse);
    });
    ExpectNear(got, cpu.Get(t_x), 5e-7f, 0.0f, "x");
    if (!inverse) forward = got;
  }

  // One block (the grid-stride loop over pairs) gives the same values; the inverse undoes the forward.
  std::vector<float> again = x;
  cuda_emulation::Launch(dim3(1), 256, [&] {
    nk::RopeKernel(again.data(), kF32, pos.data(), n, heads, head_dim, theta, false);
  });
  EXPECT_EQ(again, forward);
  cuda_emulation::Launch(grid, 256, [&] {
    nk::RopeKernel(again.data(), kF32, pos.data(), n, heads, head_dim, theta, true);
  });
  ExpectNear(again, x, 5e-7f, 0.0f, "round trip");
}

// ---- LogSoftmax / CrossEntropy ----------------------------------------------------------------------------

TEST(NormVocabEmulation, LogSoftmax) {
  Cpu cpu;
  Backend& be = *cpu.be;
  std::mt19937 rng(9);
  // v = 600: 256 threads (8 warps), 3 logits per thread; v = 40: one warp.
  for (const int64_t v : {int64_t{600}, int64_t{40}}) {
    SCOPED_TRACE("v=" + std::to_string(v));
    const int64_t n = 3;
    std::vector<float> logits = Values(n * v, rng, -8, 8);
    // Row 1: -inf past the first 10 logits (threads whose logits are all -inf add nothing); row 2: large
    // logits (the max subtraction).
    std::fill(logits.begin() + v + 10, logits.begin() + 2 * v, -INFINITY);
    for (int64_t c = 0; c < v; ++c) logits[2 * v + c] += 1000.0f;
    Tensor t_out = *be.Alloc({n, v}, DType::kF32);
    ASSERT_TRUE(be.LogSoftmax(cpu.F32(logits, {n, v}), t_out).ok());
    std::vector<float> out(n * v, kSentinel);
    cuda_emulation::Launch(dim3(RowBlocks(n)), NormThreads(v), [&] {
      nk::LogSoftmaxKernel(logits.data(), kF32, out.data(), kF32, n, v);
    });
    ExpectNear(out, cpu.Get(t_out), 5e-7f, 5e-7f, "out");
  }
}

TEST(NormVocabEmulation, CrossEntropyForwardAndBackward) {
  Cpu cpu;
  Backend& be = *cpu.be;
  std::mt19937 rng(10);
  const int64_t n = 6, v = 70;  // 64 threads (2 warps) per row, a row longer than the block
  const std::vector<float> logits = Values(n * v, rng, -6, 6), dloss = Values(n, rng, 0.25f, 2.0f);
  const std::vector<int32_t> targets = {5, -1, 0, static_cast<int32_t>(v - 1), -100, 33};
  const Tensor t_logits = cpu.F32(logits, {n, v}), t_targets = cpu.I32(targets, {n});
  Tensor t_loss = *be.Alloc({n}, DType::kF32), t_lse = *be.Alloc({n}, DType::kF32);
  ASSERT_TRUE(be.CrossEntropyForward(t_logits, t_targets, t_loss, &t_lse).ok());
  const std::vector<float> want_loss = cpu.Get(t_loss), want_lse = cpu.Get(t_lse);
  const dim3 grid(RowBlocks(n));
  const unsigned threads = NormThreads(v);

  std::vector<float> loss(n, kSentinel), lse(n, kSentinel);
  int err = 0;
  cuda_emulation::Launch(grid, threads, [&] {
    nk::CrossEntropyForwardKernel(logits.data(), kF32, targets.data(), loss.data(), kF32, lse.data(), n, v, &err);
  });
  EXPECT_EQ(err, 0);
  ExpectNear(loss, want_loss, 5e-7f, 5e-7f, "loss");
  ExpectNear(lse, want_lse, 5e-7f, 5e-7f, "lse");
  EXPECT_EQ(loss[1], 0.0f);  // ignored
  EXPECT_EQ(loss[4], 0.0f);

  // Backward, from the CPU forward's lse.
  Tensor t_dlogits = *be.Alloc({n, v}, DType::kF32);
  ASSERT_TRUE(be.CrossEntropyBackward(t_logits, t_targets, t_lse, cpu.F32(dloss, {n}), t_dlogits).ok());
  const std::vector<float> want_d = cpu.Get(t_dlogits);
  std::vector<float> dlogits(n * v, kSentinel);
  cuda_emulation::Launch(grid, threads, [&] {
    nk::CrossEntropyBackwardKernel(logits.data(), kF32, targets.data(), want_lse.data(), dloss.data(), kF32,
                                   dlogits.data(), kF32, n, v);
  });
  ExpectNear(dlogits, want_d, 2e-7f, 0.0f, "dlogits");
  for (const int64_t row : {1, 4}) {  // ignored rows: exactly 0
    EXPECT_EQ(std::vector<float>(dlogits.begin() + row * v, dlogits.begin() + (row + 1) * v),
              std::vector<float>(v, 0.0f));
  }

  // A target >= v: the error bit, loss 0 (lse still written), the other rows as before; backward treats
  // the row as ignored (all 0).
  std::vector<int32_t> bad = targets;
  bad[2] = static_cast<int32_t>(v);
  std::vector<float> loss2(n, kSentinel), lse2(n, kSentinel);
  err = 0;
  cuda_emulation::Launch(grid, threads, [&] {
    nk::CrossEntropyForwardKernel(logits.data(), kF32, bad.data(), loss2.data(), kF32, lse2.data(), n, v, &err);
  });
  EXPECT_EQ(err, kErrTargetIndex);
  std::vector<float> want_loss2 = loss;
  want_loss2[2] = 0.0f;
  EXPECT_EQ(loss2, want_loss2);
  EXPECT_EQ(lse2, lse);
  std::vector<float> dlogits2(n * v, kSentinel);
  cuda_emulation::Launch(grid, threads, [&] {
    nk::CrossEntropyBackwardKernel(logits.data(), kF32, bad.data(), want_lse.data(), dloss.data(), kF32,
                                   dlogits2.data(), kF32, n, v);
  });
  std::vector<float> want_d2 = dlogits;
  std::fill_n(want_d2.begin() + 2 * v, v, 0.0f);
  EXPECT_EQ(dlogits2, want_d2);
}

}  // namespace
}  // namespace tessera::testing
