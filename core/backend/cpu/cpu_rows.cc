// CPU row gather/scatter (MoE permute/unpermute), its scale gradient, and the embedding.
//
// Math:
//   GatherRows:        dst[i] = scale[i] * src[idx[i]]     src [N,D], idx [M], dst [M,D]
//   ScatterAddRows:    dst[idx[i]] += scale[i] * src[i]    src [M,D], dst [N,D]
//   RowDotGather:      out[i] = dot(a[i], b[idx[i]])       a [M,D], b [N,D], out [M]
//   EmbeddingForward:  out[i] = table[ids[i]]              table [V,D], ids [N], out [N,D]
//   EmbeddingBackward: dtable[ids[i]] += dout[i]
// Indices are validated (all in range) before any write. The accumulating ops may see repeated
// indices, so they are parallelized over column blocks of D rather than over rows: every thread owns
// a disjoint slice of every destination row, which is race-free and gives results independent of the
// thread count (rows are always added in index order).
#include <algorithm>

#include "absl/strings/str_cat.h"

#include "core/backend/cpu/cpu_backend_internal.h"
#include "core/backend/cpu/cpu_check.h"
#include "core/backend/cpu/cpu_kernels.h"
#include "core/util/parallel.h"
#include "core/util/status_macros.h"

namespace tessera::cpu {
namespace {

constexpr int64_t kColBlock = 64;

// dst[idx[i], :] += (scale ? scale[i] : 1) * src[i, :], parallel over column blocks.
void ScatterAdd(const float* src, const int32_t* idx, const float* scale, int64_t m, int64_t d, float* dst) {
  const int64_t blocks = (d + kColBlock - 1) / kColBlock;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, m * kColBlock));
  ParallelFor(blocks, grain, [&](int64_t bb, int64_t be) {
    const int64_t c0 = bb * kColBlock, c1 = std::min(d, be * kColBlock);
    for (int64_t i = 0; i < m; ++i) {
      const float s = scale ? scale[i] : 1.0f;
      AxpyRow(s, src + i * d + c0, dst + static_cast<int64_t>(idx[i]) * d + c0, c1 - c0);
    }
  });
}

}  // namespace

absl::Status CpuBackend::GatherRows(const Tensor& src, const Tensor& idx, const Tensor* scale, Tensor& dst) {
  constexpr char kOp[] = "GatherRows";
  RETURN_IF_ERROR(CheckF32(kOp, "src", src));
  RETURN_IF_ERROR(CheckI32(kOp, "idx", idx));
  RETURN_IF_ERROR(CheckF32(kOp, "dst", dst));
  RETURN_IF_ERROR(CheckMatrix(kOp, "src", src, -1, -1));
  const int64_t n = Rows(src), d = Cols(src), m = idx.numel();
  RETURN_IF_ERROR(CheckMatrix(kOp, "dst", dst, m, d));
  if (scale != nullptr) {
    RETURN_IF_ERROR(CheckF32(kOp, "scale", *scale));
    RETURN_IF_ERROR(CheckNumel(kOp, "scale", *scale, m));
  }
  RETURN_IF_ERROR(CheckIndices(kOp, "idx", idx.data<int32_t>(), m, n));
  if (Overlaps(src, dst)) return absl::InvalidArgumentError("GatherRows: dst must not overlap src");
  const float* ps = src.data<float>();
  const int32_t* pi = idx.data<int32_t>();
  const float* pk = scale ? scale->data<float>() : nullptr;
  float* pd = dst.data<float>();
  ParallelFor(m, GrainFor(d), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float* __restrict s = ps + static_cast<int64_t>(pi[i]) * d;
      float* __restrict o = pd + i * d;
      const float k = pk ? pk[i] : 1.0f;
      for (int64_t j = 0; j < d; ++j) o[j] = k * s[j];
    }
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::ScatterAddRows(const Tensor& src, const Tensor& idx, const Tensor* scale,
                                        Tensor& dst) {
  constexpr char kOp[] = "ScatterAddRows";
  RETURN_IF_ERROR(CheckF32(kOp, "src", src));
  RETURN_IF_ERROR(CheckI32(kOp, "idx", idx));
  RETURN_IF_ERROR(CheckF32(kOp, "dst", dst));
  const int64_t m = idx.numel();
  RETURN_IF_ERROR(CheckMatrix(kOp, "src", src, m, -1));
  const int64_t d = Cols(src);
  RETURN_IF_ERROR(CheckMatrix(kOp, "dst", dst, -1, d));
  if (scale != nullptr) {
    RETURN_IF_ERROR(CheckF32(kOp, "scale", *scale));
    RETURN_IF_ERROR(CheckNumel(kOp, "scale", *scale, m));
  }
  RETURN_IF_ERROR(CheckIndices(kOp, "idx", idx.data<int32_t>(), m, Rows(dst)));
  if (Overlaps(src, dst)) return absl::InvalidArgumentError("ScatterAddRows: dst must not overlap src");
  ScatterAdd(src.data<float>(), idx.data<int32_t>(), scale ? scale->data<float>() : nullptr, m, d,
             dst.data<float>());
  return absl::OkStatus();
}

absl::Status CpuBackend::RowDotGather(const Tensor& a, const Tensor& b, const Tensor& idx, Tensor& out) {
  constexpr char kOp[] = "RowDotGather";
  RETURN_IF_ERROR(CheckF32(kOp, "a", a));
  RETURN_IF_ERROR(CheckF32(kOp, "b", b));
  RETURN_IF_ERROR(CheckI32(kOp, "idx", idx));
  RETURN_IF_ERROR(CheckF32(kOp, "out", out));
  const int64_t m = idx.numel();
  RETURN_IF_ERROR(CheckMatrix(kOp, "a", a, m, -1));
  const int64_t d = Cols(a);
  RETURN_IF_ERROR(CheckMatrix(kOp, "b", b, -1, d));
  RETURN_IF_ERROR(CheckNumel(kOp, "out", out, m));
  RETURN_IF_ERROR(CheckIndices(kOp, "idx", idx.data<int32_t>(), m, Rows(b)));
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  const int32_t* pi = idx.data<int32_t>();
  float* po = out.data<float>();
  ParallelFor(m, GrainFor(d), [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) po[i] = Dot(pa + i * d, pb + static_cast<int64_t>(pi[i]) * d, d);
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::EmbeddingForward(const Tensor& table, const Tensor& ids, Tensor& out) {
  constexpr char kOp[] = "EmbeddingForward";
  RETURN_IF_ERROR(CheckF32(kOp, "table", table));
  RETURN_IF_ERROR(CheckI32(kOp, "ids", ids));
  RETURN_IF_ERROR(CheckF32(kOp, "out", out));
  if (table.rank() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": table has shape ", ShapeString(table.shape()),
                                                   ", expected rank 2 [V,D]"));
  }
  const int64_t v = table.dim(0), d = table.dim(1), n = ids.numel();
  RETURN_IF_ERROR(CheckMatrix(kOp, "out", out, n, d));
  RETURN_IF_ERROR(CheckIndices(kOp, "ids", ids.data<int32_t>(), n, v));
  const float* pt = table.data<float>();
  const int32_t* pi = ids.data<int32_t>();
  float* po = out.data<float>();
  ParallelFor(n, GrainFor(d), [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) std::copy_n(pt + static_cast<int64_t>(pi[i]) * d, d, po + i * d);
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::EmbeddingBackward(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  constexpr char kOp[] = "EmbeddingBackward";
  RETURN_IF_ERROR(CheckI32(kOp, "ids", ids));
  RETURN_IF_ERROR(CheckF32(kOp, "dout", dout));
  RETURN_IF_ERROR(CheckF32(kOp, "dtable", dtable));
  if (dtable.rank() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": dtable has shape ", ShapeString(dtable.shape()),
                                                   ", expected rank 2 [V,D]"));
  }
  const int64_t v = dtable.dim(0), d = dtable.dim(1), n = ids.numel();
  RETURN_IF_ERROR(CheckMatrix(kOp, "dout", dout, n, d));
  RETURN_IF_ERROR(CheckIndices(kOp, "ids", ids.data<int32_t>(), n, v));
  ScatterAdd(dout.data<float>(), ids.data<int32_t>(), nullptr, n, d, dtable.data<float>());
  return absl::OkStatus();
}

}  // namespace tessera::cpu
