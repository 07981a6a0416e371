// Host side of the CUDA backend's device-side MoE routing (kernels: cuda_moe_routing.cu).
//
// Math (backend.h): MoeSortAssignments sorts the M = N*k assignments a = t*k + j stably by
//   set(a) = weight_table[token_rank[t], topk_idx[a]]
// and writes token_idx[i] = t, gate_w[i] = topk_w[a] for sorted position i, and offsets[w] = the first
// position whose set is >= w; GroupedMatmulByOffsets computes y[offsets[w] : offsets[w+1]] =
// x[offsets[w] : offsets[w+1]] @ weights[w]^T for every w.
// Memory contract: neither op synchronizes with the host (that is their reason to exist: a decode step's
// MoE layer must not drain the stream). Everything the host knows (devices, dtypes, shapes, aliasing,
// alignment) is checked here, with INVALID_ARGUMENT naming the op and argument before anything is
// enqueued; values that live on the device (expert ids, ranks, table entries, offsets) are checked by the
// kernels, which skip what is out of range and set a bit of the error word, reported as INVALID_ARGUMENT
// by the next Synchronize / CopyToHost / SumSquares (as GatherRows does without eager index checks).
// The weight pointers go to the device through the upload ring (no synchronization).
#include <climits>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/backend/cuda/cuda_backend_internal.h"
#include "core/backend/cuda/cuda_kernels.h"
#include "core/util/status_macros.h"

namespace tessera::cuda {
namespace k = ::tessera::cuda_kernels;

namespace {

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

absl::Status CudaBackend::MoeSortAssignments(const Tensor& topk_idx, const Tensor& topk_w, const Tensor& token_rank,
                                             const Tensor& weight_table, Tensor& token_idx, Tensor& gate_w,
                                             Tensor& offsets) {
  constexpr absl::string_view kOp = "MoeSortAssignments";
  const std::pair<const Tensor*, const char*> args[] = {
      {&topk_idx, "topk_idx"},   {&topk_w, "topk_w"}, {&token_rank, "token_rank"}, {&weight_table, "weight_table"},
      {&token_idx, "token_idx"}, {&gate_w, "gate_w"}, {&offsets, "offsets"}};
  for (const auto& [t, arg] : args) RETURN_IF_ERROR(CheckOnDevice(*t, kOp, arg));
  ASSIGN_OR_RETURN(const MoeSortDims d,
                   CheckMoeSortAssignments(topk_idx, topk_w, token_rank, weight_table, token_idx, gate_w, offsets));
  // The outputs are written while topk_w is read (a permutation: not in place), and must not share memory.
  if (Overlaps(token_idx, topk_w) || Overlaps(gate_w, topk_w) || Overlaps(offsets, topk_w)) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": token_idx, gate_w and offsets must not overlap topk_w"));
  }
  if (Overlaps(token_idx, gate_w) || Overlaps(token_idx, offsets) || Overlaps(gate_w, offsets)) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": token_idx, gate_w and offsets must not overlap"));
  }
  RETURN_IF_ERROR(Enter());
  return CudaStatus(k::MoeSortAssignments(topk_idx.data<int32_t>(), topk_w.data<float>(), token_rank.data<int32_t>(),
                                          weight_table.data<int32_t>(), d.n, d.k, d.ranks, d.experts,
                                          static_cast<int32_t>(d.sets), static_cast<int32_t*>(token_idx.raw()),
                                          static_cast<float*>(gate_w.raw()), static_cast<int32_t*>(offsets.raw()),
                                          err_word_, stream()),
                    kOp);
}

absl::Status CudaBackend::GroupedMatmulByOffsets(const Tensor& x, absl::Span<const Tensor* const> weights,
                                                 const Tensor& offsets, Tensor& y) {
  constexpr absl::string_view kOp = "GroupedMatmulByOffsets";
  RETURN_IF_ERROR(CheckFloat(x, kOp, "x"));
  RETURN_IF_ERROR(CheckFloat(y, kOp, "y"));
  RETURN_IF_ERROR(CheckI32(offsets, kOp, "offsets"));
  const int64_t sets = static_cast<int64_t>(weights.size());
  RETURN_IF_ERROR(CheckNumel(offsets, sets + 1, kOp, "offsets"));
  if (sets >= INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": ", sets, " weight sets exceed the i32 limit"));
  }
  const Tensor x2 = x.Flat2D();
  const int64_t m = x2.dim(0), in = x2.dim(1);
  RETURN_IF_ERROR(Check2D(y, m, -1, kOp, "y"));
  const int64_t out = y.Flat2D().dim(1);
  const std::vector<int64_t> w_shape = {out, in};
  // 16-byte loads need every row of x and of each weight to start on a 16-byte boundary.
  bool vec = (in * static_cast<int64_t>(DTypeSize(x.dtype()))) % 16 == 0 && Aligned16(x.raw());
  std::vector<const void*> ptrs(weights.size());
  for (size_t i = 0; i < weights.size(); ++i) {
    const std::string arg = absl::StrCat("weights[", i, "]");
    if (weights[i] == nullptr) return absl::InvalidArgumentError(absl::StrCat(kOp, ": ", arg, " is null"));
    const Tensor& w = *weights[i];
    RETURN_IF_ERROR(CheckFloat(w, kOp, arg));
    if (w.shape() != w_shape) {
      return absl::InvalidArgumentError(absl::StrCat(kOp, ": ", arg, " has shape ", ShapeString(w.shape()),
                                                     ", expected ", ShapeString(w_shape)));
    }
    if (w.dtype() != weights[0]->dtype()) {
      return absl::InvalidArgumentError(absl::StrCat(kOp, ": ", arg, " is ", DTypeName(w.dtype()), ", weights[0] is ",
                                                     DTypeName(weights[0]->dtype())));
    }
    if (Overlaps(w, y)) return absl::InvalidArgumentError(absl::StrCat(kOp, ": y must not overlap ", arg));
    vec = vec && Aligned16(w.raw());
    ptrs[i] = w.raw();
  }
  RETURN_IF_ERROR(CheckMatmulDtypes(x.dtype(), sets > 0 ? weights[0]->dtype() : x.dtype(), y.dtype(), kOp));
  if (Overlaps(x, y)) return absl::InvalidArgumentError(absl::StrCat(kOp, ": y must not overlap x"));
  if (Overlaps(offsets, y)) return absl::InvalidArgumentError(absl::StrCat(kOp, ": y must not overlap offsets"));
  RETURN_IF_ERROR(Enter());
  if (sets == 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(void* dev, uploads_->Upload(ptrs.data(), ptrs.size() * sizeof(void*)));
  return CudaStatus(k::GroupedMatmulByOffsets(x.raw(), Dt(x), static_cast<const void* const*>(dev),
                                              offsets.data<int32_t>(), static_cast<int32_t>(sets), m, in, out, y.raw(),
                                              Dt(y), vec, err_word_, stream()),
                    kOp);
}

}  // namespace tessera::cuda
