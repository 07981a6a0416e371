// CPU dense and grouped (MoE expert) matmuls: OpenBLAS cblas_sgemm (row-major), except for few-row
// products, which go to the direct kernels of cpu_small_gemm.h (see "Small-M path" below).
//
// Math:
//   Matmul:                 c = alpha * op(a) @ op(b) + beta * c   (beta == 0: c's contents ignored)
//   GroupedMatmul:          y[g]  = x[g] @ W_g^T        x [N,in], W_g [out,in], y [N,out]
//   GroupedMatmulInputGrad: dx[g] = dy[g] @ W_g         dy [N,out], dx [N,in]
//   GroupedMatmulWeightGrad dW_g += dy[g]^T @ x[g]      (only groups with weight_grad)
// Rows outside every group are not touched. Groups must be disjoint, in range, and their weights f32
// [out,in]; otherwise INVALID_ARGUMENT before anything is written.
//
// Threading choice for grouped calls. The BLAS is single-threaded and Sgemm splits a large product over
// the pool (cpu_blas.h). An MoE layer's groups are many products of tens of rows each (the 'small'
// config's training step: 32 groups of ~64 rows x 1024 x 512); split one at a time, each gets a slice
// too thin to run well, so the groups run concurrently instead, one whole single-threaded product per pool
// thread at a time (bench_train --profile on a 2-core Zen 3: GroupedMatmul 1.66-1.85 s vs 2.03-2.30 s
// and GroupedMatmulInputGrad 1.22-1.41 vs 1.46-1.74 s over 3 steps, against one group after another
// with OpenBLAS's 2 threads; ops/bench/RESULTS.md "One pool for the BLAS"). A group holding more than
// 1/threads of the call's rows would leave the other threads idle, so it runs alone, split by Sgemm.
// Weight-grad groups that share a weight_grad tensor run one after another (they accumulate into the
// same memory).
//
// Small-M path. Above m*n*k = 262144 OpenBLAS packs B (sgemm_incopy, ~26% of decode time) and the
// product is threaded (measured when OpenBLAS threaded it; Sgemm now splits it over the pool); with
// 1-8 rows of A that costs far more than the product itself (small
// config, bench_small_gemm: y = x W^T 1024x1024 at m=1..8: 920-940 us sgemm vs 75-180 us direct;
// LM head 32000x1024 at m=1: 55 ms vs 10 ms; 8 expert groups of 1-3 rows, 512x1024: 4.9 ms vs 0.7 ms).
// So products with few rows above that size use the direct kernels (no packing, B streamed
// once per 4 rows of A), split into (group, column range) items run with ParallelFor: a big few-row
// product (LM head) is split over its columns, many small groups share the threads. Below that size
// OpenBLAS's AVX-512 cores (SkylakeX, Cooperlake) run through their small-matrix kernels, which measured
// as fast as or faster than the direct kernels (builtin:tiny shapes, 192x96 at 1-3 rows: ~0.7-1 us per
// call either way), so there those stay on sgemm. OpenBLAS 0.3.21's other cores have no such kernels and
// pack B even for one row of A: on a Zen 3 (Haswell kernels; bench_small_gemm, ops/bench/RESULTS.md "A
// second CPU") a batch-1 k/v projection, 1x256x1024, took 128.6 us through sgemm vs 21.4 us direct, the
// router's 1x32x1024 14.9 vs 2.5 us, builtin:tiny's products 1.3-5.6x faster direct at 1-4 rows and
// 1.04-1.13x at 8; there every y = x W^T of up to kSmallM rows takes the direct kernels
// (BlasHasSmallMatrixKernels). The dx = dy W (NN) direct kernel streams B
// rows with a stride; it wins only up to 4 rows and a moderate inner dim (at m=4, k=32000 it lost
// 0.75x), hence its tighter limits.
#include "core/backend/cpu/cpu_blas.h"

#include <strings.h>

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/backend/cpu/cpu_backend_internal.h"
#include "core/backend/cpu/cpu_check.h"
#include "core/backend/cpu/cpu_bf16_gemm.h"
#include "core/backend/cpu/cpu_small_gemm.h"
#include "core/util/parallel.h"
#include "core/util/status_macros.h"

namespace tessera::cpu {
namespace {

constexpr double kSmallGemmMnk = kBlasSingleThreadMnk;
// Largest row count (of op(a), or of a group) that takes the direct kernels: NT (y = x W^T) and NN.
constexpr int64_t kSmallM = 8;
constexpr int64_t kSmallMNN = 4;
constexpr int64_t kMaxInnerNN = 4096;

// Whether the loaded OpenBLAS core has small-matrix sgemm kernels (its AVX-512 ones; see the file comment).
bool BlasHasSmallMatrixKernels() {
  static const bool has = [] {
    const std::string& core = Blas().core;
    for (const char* c : {"SkylakeX", "Cooperlake", "SapphireRapids"}) {
      if (strcasecmp(core.c_str(), c) == 0) return true;
    }
    return false;
  }();
  return has;
}

// Whether an m x n x k product goes to the direct kernels (see the file comment).
bool UseDirectNT(int64_t m, int64_t n, int64_t k) {
  return m <= kSmallM && (static_cast<double>(m) * n * k > kSmallGemmMnk || !BlasHasSmallMatrixKernels());
}
bool UseDirectNN(int64_t m, int64_t n, int64_t k) {
  return m <= kSmallMNN && k <= kMaxInnerNN && static_cast<double>(m) * n * k > kSmallGemmMnk;
}
// Multiply-adds per ParallelFor chunk of direct-kernel work: below ~this a thread hand-off costs more
// than it saves.
constexpr int64_t kDirectChunkMacs = 1 << 19;
// Column blocks handed to threads are multiples of these (whole kernel tiles: NT tiles are 8 outputs
// wide (AVX-512) or 8/6/4/3 (AVX2), NN tiles 64/48/32/24 columns).
constexpr int64_t kAlignNT = 24;
constexpr int64_t kAlignNN = 64;

// One unit of direct-kernel work: columns [j0, j1) of rows [row_begin, row_begin + rows).
struct DirectItem {
  int64_t row_begin, rows, j0, j1;
  const void* b;  // the group's weight (f32, or bf16 on the bf16 path)
  const float* bf() const { return static_cast<const float*>(b); }
};

// Appends items covering a rows x n product (inner dim k) whose columns may be split.
void AddDirectItems(int64_t row_begin, int64_t rows, int64_t n, int64_t k, int64_t align, const void* b,
                    std::vector<DirectItem>& items) {
  const int64_t per_col = std::max<int64_t>(1, rows * k);
  int64_t cols = std::max<int64_t>(align, kDirectChunkMacs / per_col);
  cols = (cols + align - 1) / align * align;
  for (int64_t j = 0; j < n; j += cols) items.push_back({row_begin, rows, j, std::min(n, j + cols), b});
}

// Runs run(item) over all items (DirectItem or one derived from it), in parallel when there is more than
// one chunk of work.
template <typename Item, typename Run>
void RunDirectItems(const std::vector<Item>& items, int64_t k, Run run) {
  if (items.empty()) return;
  int64_t macs = 0;
  for (const Item& it : items) macs += it.rows * (it.j1 - it.j0) * k;
  const int64_t avg = std::max<int64_t>(1, macs / static_cast<int64_t>(items.size()));
  const int64_t grain = std::max<int64_t>(1, kDirectChunkMacs / avg);
  if (static_cast<int64_t>(items.size()) <= grain) {
    for (const Item& it : items) run(it);
    return;
  }
  ParallelFor(static_cast<int64_t>(items.size()), grain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) run(items[i]);
  });
}

// Checks one group tensor; the argument name is only built when the check fails (a multi-tenant
// batch has one group per (slot, overlay), and this runs for every group on every call).
absl::Status CheckGroupTensor(absl::string_view op, size_t gi, absl::string_view field, const Tensor& t,
                              int64_t out_features, int64_t in_features) {
  if (CheckF32(op, field, t).ok() && CheckShape(op, field, t, {out_features, in_features}).ok()) {
    return absl::OkStatus();
  }
  const std::string name = absl::StrCat("groups[", gi, "].", field);
  RETURN_IF_ERROR(CheckF32(op, name, t));
  return CheckShape(op, name, t, {out_features, in_features});
}

absl::Status CheckGroups(absl::string_view op, absl::Span<const GemmGroup> groups, int64_t n_rows,
                         int64_t out_features, int64_t in_features, bool need_grad_ptr) {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  ranges.reserve(groups.size());
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const GemmGroup& g = groups[gi];
    if (g.row_begin < 0 || g.rows < 0 || g.row_begin + g.rows > n_rows) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": groups[", gi, "] rows [", g.row_begin, ", ",
                                                     g.row_begin + g.rows, ") out of range [0, ", n_rows,
                                                     ")"));
    }
    if (g.weight == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": groups[", gi, "].weight is null"));
    }
    RETURN_IF_ERROR(CheckGroupTensor(op, gi, "weight", *g.weight, out_features, in_features));
    if (need_grad_ptr && g.weight_grad != nullptr) {
      RETURN_IF_ERROR(CheckGroupTensor(op, gi, "weight_grad", *g.weight_grad, out_features, in_features));
    }
    if (g.rows > 0) ranges.emplace_back(g.row_begin, g.row_begin + g.rows);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": groups overlap at rows [", ranges[i].first,
                                                     ", ", ranges[i - 1].second, ")"));
    }
  }
  return absl::OkStatus();
}

// Runs gemm(group) for every group with rows > 0 (and accepted by `want`): concurrently when allowed,
// except a group with more than 1/threads of the rows (all groups of a call share in and out), which
// runs alone (see the file comment).
template <typename Gemm, typename Want>
void RunGroups(absl::Span<const GemmGroup> groups, bool allow_parallel, Want want, Gemm gemm) {
  std::vector<int64_t> wanted, together, alone;
  int64_t total_rows = 0;
  for (size_t i = 0; i < groups.size(); ++i) {
    if (groups[i].rows == 0 || !want(groups[i])) continue;
    wanted.push_back(static_cast<int64_t>(i));
    total_rows += groups[i].rows;
  }
  const int threads = NumThreads();
  for (int64_t i : wanted) {
    const bool dominant = groups[i].rows * threads > total_rows;
    (allow_parallel && !dominant ? together : alone).push_back(i);
  }
  if (together.size() == 1) alone.push_back(together[0]);
  else if (!together.empty()) {
    ParallelFor(static_cast<int64_t>(together.size()), 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) gemm(groups[together[i]]);
    });
  }
  for (int64_t i : alone) gemm(groups[i]);
}

}  // namespace

absl::Status CpuBackend::Matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
                                float alpha, float beta) {
  constexpr char kOp[] = "Matmul";
  RETURN_IF_ERROR(CheckF32(kOp, "a", a));
  RETURN_IF_ERROR(CheckF32(kOp, "b", b));
  RETURN_IF_ERROR(CheckF32(kOp, "c", c));
  for (auto [t, n] : {std::pair<const Tensor*, const char*>{&a, "a"}, {&b, "b"}, {&c, "c"}}) {
    if (t->rank() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(kOp, ": ", n, " has shape ", ShapeString(t->shape()),
                                                     ", expected rank 2 (use Flat2D())"));
    }
  }
  const int64_t m = trans_a ? a.dim(1) : a.dim(0);
  const int64_t k = trans_a ? a.dim(0) : a.dim(1);
  const int64_t kb = trans_b ? b.dim(1) : b.dim(0);
  const int64_t n = trans_b ? b.dim(0) : b.dim(1);
  if (kb != k) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": b has shape ", ShapeString(b.shape()),
                                                   trans_b ? " (transposed)" : "", ", expected inner dim ", k,
                                                   " to match a ", ShapeString(a.shape()),
                                                   trans_a ? " (transposed)" : ""));
  }
  RETURN_IF_ERROR(CheckShape(kOp, "c", c, {m, n}));
  if (m == 0 || n == 0) return absl::OkStatus();
  float* pc = c.data<float>();
  if (k == 0) {  // BLAS would do the same; spelled out so an uninitialized c never leaks through.
    for (int64_t i = 0; i < m * n; ++i) pc[i] = beta == 0.0f ? 0.0f : beta * pc[i];
    return absl::OkStatus();
  }
  if (!trans_a && (trans_b ? UseDirectNT(m, n, k) : UseDirectNN(m, n, k))) {
    const float* pa = a.data<float>();
    const float* pb = b.data<float>();
    const int64_t ldb = b.dim(1);
    std::vector<DirectItem> items;
    AddDirectItems(0, m, n, k, trans_b ? kAlignNT : kAlignNN, pb, items);
    const SmallGemmB b_from = SmallGemmBFor(n, k, sizeof(float));
    RunDirectItems(items, k, [&](const DirectItem& it) {
      if (trans_b) {
        SmallGemmNT(m, it.j1 - it.j0, k, alpha, pa, k, pb + it.j0 * ldb, ldb, beta, pc + it.j0, n, b_from);
      } else {
        SmallGemmNN(m, it.j1 - it.j0, k, alpha, pa, k, pb + it.j0, ldb, beta, pc + it.j0, n);
      }
    });
    return absl::OkStatus();
  }
  Sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha,
              a.data<float>(), static_cast<blasint>(a.dim(1)), b.data<float>(),
              static_cast<blasint>(b.dim(1)), beta, pc, static_cast<blasint>(n));
  return absl::OkStatus();
}

absl::Status CpuBackend::GroupedMatmul(const Tensor& x, absl::Span<const GemmGroup> groups, Tensor& y) {
  constexpr char kOp[] = "GroupedMatmul";
  RETURN_IF_ERROR(CheckF32(kOp, "x", x));
  RETURN_IF_ERROR(CheckF32(kOp, "y", y));
  RETURN_IF_ERROR(CheckMatrix(kOp, "x", x, -1, -1));
  const int64_t n = Rows(x), in = Cols(x);
  RETURN_IF_ERROR(CheckMatrix(kOp, "y", y, n, -1));
  const int64_t out = Cols(y);
  RETURN_IF_ERROR(CheckGroups(kOp, groups, n, out, in, false));
  if (in == 0) {  // empty inner dimension: y[g] = 0
    for (const GemmGroup& g : groups) std::fill_n(y.data<float>() + g.row_begin * out, g.rows * out, 0.0f);
    return absl::OkStatus();
  }
  if (out == 0) return absl::OkStatus();
  const float* px = x.data<float>();
  float* py = y.data<float>();
  std::vector<DirectItem> items;
  for (const GemmGroup& g : groups) {
    if (g.rows > 0 && UseDirectNT(g.rows, out, in)) {
      AddDirectItems(g.row_begin, g.rows, out, in, kAlignNT, g.weight->data<float>(), items);
    }
  }
  const SmallGemmB b_from = SmallGemmBFor(out, in, sizeof(float));  // every group's weight is out x in
  RunDirectItems(items, in, [&](const DirectItem& it) {
    SmallGemmNT(it.rows, it.j1 - it.j0, in, 1.0f, px + it.row_begin * in, in, it.bf() + it.j0 * in, in, 0.0f,
                py + it.row_begin * out + it.j0, out, b_from);
  });
  RunGroups(groups, true,
            [&](const GemmGroup& g) { return !UseDirectNT(g.rows, out, in); },
            [&](const GemmGroup& g) {
              Sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(g.rows),
                          static_cast<blasint>(out), static_cast<blasint>(in), 1.0f, px + g.row_begin * in,
                          static_cast<blasint>(in), g.weight->data<float>(), static_cast<blasint>(in), 0.0f,
                          py + g.row_begin * out, static_cast<blasint>(out));
            });
  return absl::OkStatus();
}

absl::Status CpuBackend::GroupedMatmulInputGrad(const Tensor& dy, absl::Span<const GemmGroup> groups,
                                                Tensor& dx) {
  constexpr char kOp[] = "GroupedMatmulInputGrad";
  RETURN_IF_ERROR(CheckF32(kOp, "dy", dy));
  RETURN_IF_ERROR(CheckF32(kOp, "dx", dx));
  RETURN_IF_ERROR(CheckMatrix(kOp, "dy", dy, -1, -1));
  const int64_t n = Rows(dy), out = Cols(dy);
  RETURN_IF_ERROR(CheckMatrix(kOp, "dx", dx, n, -1));
  const int64_t in = Cols(dx);
  RETURN_IF_ERROR(CheckGroups(kOp, groups, n, out, in, false));
  if (in == 0) return absl::OkStatus();
  if (out == 0) {
    for (const GemmGroup& g : groups) std::fill_n(dx.data<float>() + g.row_begin * in, g.rows * in, 0.0f);
    return absl::OkStatus();
  }
  const float* pdy = dy.data<float>();
  float* pdx = dx.data<float>();
  std::vector<DirectItem> items;
  for (const GemmGroup& g : groups) {
    if (g.rows > 0 && UseDirectNN(g.rows, in, out)) {
      AddDirectItems(g.row_begin, g.rows, in, out, kAlignNN, g.weight->data<float>(), items);
    }
  }
  RunDirectItems(items, out, [&](const DirectItem& it) {
    SmallGemmNN(it.rows, it.j1 - it.j0, out, 1.0f, pdy + it.row_begin * out, out, it.bf() + it.j0, in, 0.0f,
                pdx + it.row_begin * in + it.j0, in);
  });
  RunGroups(groups, true,
            [&](const GemmGroup& g) { return !UseDirectNN(g.rows, in, out); },
            [&](const GemmGroup& g) {
              Sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(g.rows),
                          static_cast<blasint>(in), static_cast<blasint>(out), 1.0f, pdy + g.row_begin * out,
                          static_cast<blasint>(out), g.weight->data<float>(), static_cast<blasint>(in), 0.0f,
                          pdx + g.row_begin * in, static_cast<blasint>(in));
            });
  return absl::OkStatus();
}

absl::Status CpuBackend::GroupedMatmulWeightGrad(const Tensor& x, const Tensor& dy,
                                                 absl::Span<const GemmGroup> groups) {
  constexpr char kOp[] = "GroupedMatmulWeightGrad";
  RETURN_IF_ERROR(CheckF32(kOp, "x", x));
  RETURN_IF_ERROR(CheckF32(kOp, "dy", dy));
  RETURN_IF_ERROR(CheckMatrix(kOp, "x", x, -1, -1));
  const int64_t n = Rows(x), in = Cols(x);
  RETURN_IF_ERROR(CheckMatrix(kOp, "dy", dy, n, -1));
  const int64_t out = Cols(dy);
  RETURN_IF_ERROR(CheckGroups(kOp, groups, n, out, in, true));
  if (in == 0 || out == 0) return absl::OkStatus();
  // Groups accumulating into overlapping weight_grad memory must not run concurrently.
  std::vector<const Tensor*> grads;
  for (const GemmGroup& g : groups) {
    if (g.weight_grad != nullptr && g.rows > 0) grads.push_back(g.weight_grad);
  }
  bool shared = false;
  for (size_t i = 0; i < grads.size() && !shared; ++i) {
    for (size_t j = i + 1; j < grads.size() && !shared; ++j) shared = Overlaps(*grads[i], *grads[j]);
  }
  const float* px = x.data<float>();
  const float* pdy = dy.data<float>();
  RunGroups(groups, !shared,
            [](const GemmGroup& g) { return g.weight_grad != nullptr; },
            [&](const GemmGroup& g) {
              Sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<blasint>(out),
                          static_cast<blasint>(in), static_cast<blasint>(g.rows), 1.0f, pdy + g.row_begin * out,
                          static_cast<blasint>(out), px + g.row_begin * in, static_cast<blasint>(in), 1.0f,
                          g.weight_grad->data<float>(), static_cast<blasint>(in));
            });
  return absl::OkStatus();
}

// ---- bf16 weights (cpu_bf16_gemm.h; widened panels beyond its rows) -----------------------------------
// For NarrowStorageBackend: a bf16 model's y = x W^T products read the bf16 weights directly instead of
// widening a copy of each weight per call. Only calls the f32 path would accept (valid shapes, disjoint
// groups, no output overlapping an input) are taken; anything else returns false untouched and goes
// through the staging path, which reports any error.
namespace {

bool IsBf16Cpu(const Tensor& t) { return t.defined() && t.device() == DeviceKind::kCpu && t.dtype() == DType::kBF16; }
bool IsFloatOut(const Tensor& t) {
  return t.defined() && t.device() == DeviceKind::kCpu && (t.dtype() == DType::kF32 || t.dtype() == DType::kBF16);
}

// The f32 output rows [row_begin, row_begin + rows) of c [*, n]: c itself when f32, else a scratch copy
// (widened when beta != 0) that Commit rounds back.
class Bf16Out {
 public:
  Bf16Out(Tensor& c, int64_t n) : c_(c), n_(n) {
    if (c.dtype() != DType::kF32) scratch_.resize(static_cast<size_t>(cpu::Rows(c) * n));
  }
  // Row 0 of the f32 rows.
  float* Base() { return c_.dtype() == DType::kF32 ? c_.data<float>() : scratch_.data(); }
  // Rows [row_begin, row_begin + rows), widened from c first when `read`.
  float* Load(int64_t row_begin, int64_t rows, bool read) {
    if (c_.dtype() == DType::kF32) return c_.data<float>() + row_begin * n_;
    float* s = scratch_.data() + row_begin * n_;
    if (read) {
      const uint16_t* src = c_.data<uint16_t>() + row_begin * n_;
      const int64_t count = rows * n_;
      for (int64_t i = 0; i < count; ++i) s[i] = Bf16ToF32(src[i]);
    }
    return s;
  }
  void Commit(int64_t row_begin, int64_t rows) {
    if (c_.dtype() == DType::kF32) return;
    uint16_t* dst = c_.data<uint16_t>() + row_begin * n_;
    const float* s = scratch_.data() + row_begin * n_;
    const int64_t count = rows * n_;
    for (int64_t i = 0; i < count; ++i) dst[i] = F32ToBf16(s[i]);
  }

 private:
  Tensor& c_;
  int64_t n_;
  std::vector<float> scratch_;
};

// a's rows as f32 when some product reads f32 (every one but vdpbf16ps's kernels).
std::vector<float> WidenIfNeeded(Bf16GemmIsa isa, const Tensor& a) {
  std::vector<float> out;
  if (isa == Bf16GemmIsa::kAvx512Bf16) return out;
  const int64_t n = a.numel();
  out.resize(static_cast<size_t>(n));
  const uint16_t* p = a.data<uint16_t>();
  for (int64_t i = 0; i < n; ++i) out[i] = Bf16ToF32(p[i]);
  return out;
}

// Prefill-sized products (more rows than the bf16 kernels take): the weight is widened one panel of columns
// at a time into the running thread's own f32 buffer, and a single-threaded sgemm reads the panel while it
// is still in cache (one pool task per panel). Each weight then crosses memory once, in bf16; the staging
// path instead wrote a whole f32 copy of it per call and read that back (2 + 4 + 4 bytes per weight).
// A panel is about kWidenPanelFloats (256 KB: L2-sized), at least kWidenPanelMinCols columns so that
// sgemm's repacking of a per panel stays a small share (1/cols) of the panel's work.
constexpr int64_t kWidenPanelFloats = 1 << 16;
constexpr int64_t kWidenPanelMinCols = 32;

int64_t WidenPanelCols(int64_t k) {
  return std::max<int64_t>(kWidenPanelMinCols, kWidenPanelFloats / std::max<int64_t>(1, k) / 8 * 8);
}

// Columns [j0, j1) of a product's rows, and which path computes them.
struct Bf16Item : DirectItem {
  bool widened;  // a widened panel through sgemm, else the bf16 kernel
};

// Appends a rows x n product's items: the bf16 kernel's column blocks, or widened panels.
void AddBf16Items(int64_t row_begin, int64_t rows, int64_t n, int64_t k, const uint16_t* b,
                  std::vector<Bf16Item>& items) {
  if (rows <= Bf16KernelMaxRows()) {
    std::vector<DirectItem> direct;
    AddDirectItems(row_begin, rows, n, k, kAlignNT, b, direct);
    for (const DirectItem& d : direct) items.push_back({d, false});
    return;
  }
  const int64_t cols = WidenPanelCols(k);
  for (int64_t j = 0; j < n; j += cols) items.push_back({{row_begin, rows, j, std::min(n, j + cols), b}, true});
}

// c[rows, j0:j1] = alpha * a[rows] @ b[j0:j1]^T + beta * c, for one item (single-threaded). a_bf16 / a_f32
// point at the item's first row; c at its first row's column 0.
void RunBf16Item(Bf16GemmIsa isa, const Bf16Item& item, int64_t k, float alpha, const uint16_t* a_bf16,
                 const float* a_f32, float beta, float* c, int64_t ldc) {
  const DirectItem& it = item;
  const uint16_t* b = static_cast<const uint16_t*>(it.b) + it.j0 * k;
  const int64_t cols = it.j1 - it.j0;
  if (!item.widened) {
    Bf16GemmNT(isa, it.rows, cols, k, alpha, a_bf16, a_f32, k, b, k, beta, c + it.j0, ldc);
    return;
  }
  thread_local std::vector<float> panel;
  panel.resize(static_cast<size_t>(cols * k));
  float* pw = panel.data();
  const int64_t count = cols * k;
  for (int64_t i = 0; i < count; ++i) pw[i] = Bf16ToF32(b[i]);
  Sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(it.rows), static_cast<blasint>(cols),
        static_cast<blasint>(k), alpha, a_f32, static_cast<blasint>(k), pw, static_cast<blasint>(k), beta,
        c + it.j0, static_cast<blasint>(ldc));
}

}  // namespace

int64_t Bf16KernelMaxRows() {
  return Bf16GemmBestIsa() == Bf16GemmIsa::kAvx512Bf16 ? std::numeric_limits<int64_t>::max() : kSmallM;
}

bool Bf16DirectMatmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
                      float beta) {
  if (trans_a || !trans_b || !IsBf16Cpu(a) || !IsBf16Cpu(b) || !IsFloatOut(c)) return false;
  if (a.rank() != 2 || b.rank() != 2 || c.rank() != 2) return false;
  const int64_t m = a.dim(0), k = a.dim(1), n = b.dim(0);
  if (m < 1 || k < 1 || n < 1 || b.dim(1) != k || c.dim(0) != m || c.dim(1) != n) return false;
  if (Overlaps(c, a) || Overlaps(c, b)) return false;
  const Bf16GemmIsa isa = Bf16GemmBestIsa();
  const std::vector<float> a32 = WidenIfNeeded(isa, a);
  Bf16Out out(c, n);
  float* pc = out.Load(0, m, beta != 0.0f);
  std::vector<Bf16Item> items;
  AddBf16Items(0, m, n, k, b.data<uint16_t>(), items);
  RunDirectItems(items, k, [&](const Bf16Item& item) {
    RunBf16Item(isa, item, k, alpha, a.data<uint16_t>(), a32.empty() ? nullptr : a32.data(), beta, pc, n);
  });
  out.Commit(0, m);
  return true;
}

bool Bf16DirectGroupedMatmul(const Tensor& x, absl::Span<const GemmGroup> groups, Tensor& y) {
  if (!IsBf16Cpu(x) || !IsFloatOut(y) || x.rank() < 1 || y.rank() < 1) return false;
  const int64_t n_rows = Rows(x), in = Cols(x), out = Cols(y);
  if (Rows(y) != n_rows || in < 1 || out < 1 || Overlaps(x, y)) return false;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (const GemmGroup& g : groups) {
    if (g.weight == nullptr || !IsBf16Cpu(*g.weight) || g.weight->rank() != 2 || g.weight->dim(0) != out ||
        g.weight->dim(1) != in || Overlaps(*g.weight, y)) {
      return false;
    }
    if (g.row_begin < 0 || g.rows < 0 || g.row_begin + g.rows > n_rows) return false;
    if (g.rows > 0) ranges.emplace_back(g.row_begin, g.row_begin + g.rows);
  }
  if (ranges.empty()) return false;
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) return false;
  }
  const Bf16GemmIsa isa = Bf16GemmBestIsa();
  const std::vector<float> x32 = WidenIfNeeded(isa, x);
  Bf16Out o(y, out);
  float* py = o.Base();  // y is write-only here (each group's rows are overwritten)
  const uint16_t* px = x.data<uint16_t>();
  std::vector<Bf16Item> items;
  for (const GemmGroup& g : groups) {
    if (g.rows > 0) AddBf16Items(g.row_begin, g.rows, out, in, g.weight->data<uint16_t>(), items);
  }
  RunDirectItems(items, in, [&](const Bf16Item& item) {
    const int64_t r0 = item.row_begin;
    RunBf16Item(isa, item, in, 1.0f, px + r0 * in, x32.empty() ? nullptr : x32.data() + r0 * in, 0.0f,
                py + r0 * out, out);
  });
  for (const auto& [begin, end] : ranges) o.Commit(begin, end - begin);
  return true;
}

}  // namespace tessera::cpu
