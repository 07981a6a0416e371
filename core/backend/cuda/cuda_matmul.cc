// Dense and grouped (MoE expert) matmuls on the CUDA backend.
//
// Row-major to cuBLAS: a row-major C[M,N] = opA(A) opB(B) is the column-major C^T[N,M] = opB(B)^T opA(A)^T,
// so every call passes B as cuBLAS's first operand and A as its second, with m = N, n = M.
// Precision: fp32 inputs use CUBLAS_COMPUTE_32F (no TF32) so results match the CPU reference, unless
// SetCudaAllowTf32 chose TF32 tensor cores; bf16/f16 inputs use tensor cores with fp32 accumulation. A and B must share a dtype for cuBLAS; C may be f32 or
// A's dtype.
// Grouped GEMM: one row-major problem per non-empty group, all in one launch, either through
// cublasGemmGroupedBatchedEx (its pointer arrays uploaded per call) or our kernel (cuda_grouped_gemm.cu,
// problem table uploaded per call); see GroupedGemmImpl in cuda_backend.h. Problems of one shape share
// one cuBLAS group (group_size > 1). Measured on an H100 (ops/bench/RESULTS.md): cuBLAS's grouped path
// reaches ~0.35 of a dense GEMM of the same FLOPs at MoE shapes; cutting every expert into equal 128-row
// chunks so they all batch as one shape in the grouped API did not change that. kCublasChunks sends such
// full chunks through the classic cublasGemmBatchedEx instead (not yet measured). Type combinations
// the grouped API refuses (bf16 inputs into f32 weight gradients: CUBLAS_STATUS_NOT_SUPPORTED on CUDA
// 13.0) run as one cublasGemmEx per problem.
#include <algorithm>
#include <climits>
#include <map>
#include <tuple>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/backend/cuda/cuda_backend_internal.h"
#include "core/backend/cuda/cuda_kernels.h"
#include "core/util/status_macros.h"

namespace tessera::cuda {
namespace k = ::tessera::cuda_kernels;

namespace {

cudaDataType_t CudaType(DType t) {
  switch (t) {
    case DType::kBF16: return CUDA_R_16BF;
    case DType::kF16: return CUDA_R_16F;
    default: return CUDA_R_32F;
  }
}

cublasOperation_t Op(bool trans) { return trans ? CUBLAS_OP_T : CUBLAS_OP_N; }

// One cuBLAS group: problems that share every scalar argument (see LaunchGrouped).
struct ShapeKey {
  int ta, tb;
  int64_t m, n, k, lda, ldb, ldc;
  float alpha, beta;
  bool operator<(const ShapeKey& o) const {
    return std::tie(ta, tb, m, n, k, lda, ldb, ldc, alpha, beta) <
           std::tie(o.ta, o.tb, o.m, o.n, o.k, o.lda, o.ldb, o.ldc, o.alpha, o.beta);
  }
};

// Equal-shape problems of one cuBLAS call, keyed by every scalar argument.
std::map<ShapeKey, std::vector<const k::GemmProblem*>> ByShape(absl::Span<const k::GemmProblem> probs) {
  std::map<ShapeKey, std::vector<const k::GemmProblem*>> by_shape;
  for (const k::GemmProblem& p : probs) {
    by_shape[ShapeKey{p.trans_a, p.trans_b, p.m, p.n, p.k, p.lda, p.ldb, p.ldc, p.alpha, p.beta}].push_back(&p);
  }
  return by_shape;
}

absl::Status CheckIntRange(int64_t v, absl::string_view op, absl::string_view what) {
  if (v > INT_MAX) return absl::InvalidArgumentError(absl::StrCat(op, ": ", what, " ", v, " exceeds the 32-bit cuBLAS limit"));
  return absl::OkStatus();
}

}  // namespace

absl::Status CudaBackend::Matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
                                 float beta) {
  RETURN_IF_ERROR(CheckFloat(a, "Matmul", "a"));
  RETURN_IF_ERROR(CheckFloat(b, "Matmul", "b"));
  RETURN_IF_ERROR(CheckFloat(c, "Matmul", "c"));
  if (a.rank() != 2 || b.rank() != 2 || c.rank() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("Matmul: a, b, c must be rank 2, got ", a.DebugString(), ", ",
                                                   b.DebugString(), ", ", c.DebugString()));
  }
  const int64_t m = trans_a ? a.dim(1) : a.dim(0), ka = trans_a ? a.dim(0) : a.dim(1);
  const int64_t kb = trans_b ? b.dim(1) : b.dim(0), n = trans_b ? b.dim(0) : b.dim(1);
  if (ka != kb) {
    return absl::InvalidArgumentError(absl::StrCat("Matmul: inner dims differ: op(a) is [", m, ",", ka, "] but op(b) is [",
                                                   kb, ",", n, "] (b ", b.DebugString(), ")"));
  }
  if (c.dim(0) != m || c.dim(1) != n) {
    return absl::InvalidArgumentError(absl::StrCat("Matmul: c has shape ", ShapeString(c.shape()), ", expected [", m,
                                                   ",", n, "]"));
  }
  RETURN_IF_ERROR(CheckMatmulDtypes(a.dtype(), b.dtype(), c.dtype(), "Matmul"));
  for (int64_t v : {m, n, ka, a.dim(1), b.dim(1)}) RETURN_IF_ERROR(CheckIntRange(v, "Matmul", "dimension"));
  RETURN_IF_ERROR(Enter());
  if (m == 0 || n == 0) return absl::OkStatus();
  if (ka == 0) {  // empty sum: c = beta * c
    if (beta == 0.0f) return Fill(c, 0.0f);
    return Scale(c, beta);
  }
  return CublasStatus(
      cublasGemmEx(cublas_, Op(trans_b), Op(trans_a), static_cast<int>(n), static_cast<int>(m), static_cast<int>(ka),
                   &alpha, b.raw(), CudaType(b.dtype()), static_cast<int>(b.dim(1)), a.raw(), CudaType(a.dtype()),
                   static_cast<int>(a.dim(1)), &beta, c.raw(), CudaType(c.dtype()), static_cast<int>(n),
                   ComputeType(a.dtype()), CUBLAS_GEMM_DEFAULT),
      "Matmul: cublasGemmEx");
}

// ---- Grouped --------------------------------------------------------------------------------------

absl::Status CudaBackend::GroupedMatmul(const Tensor& x, absl::Span<const GemmGroup> groups, Tensor& y) {
  return RunGrouped(GroupedMode::kForward, x, nullptr, groups, &y, "GroupedMatmul");
}

absl::Status CudaBackend::GroupedMatmulInputGrad(const Tensor& dy, absl::Span<const GemmGroup> groups, Tensor& dx) {
  return RunGrouped(GroupedMode::kInputGrad, dy, nullptr, groups, &dx, "GroupedMatmulInputGrad");
}

absl::Status CudaBackend::GroupedMatmulWeightGrad(const Tensor& x, const Tensor& dy, absl::Span<const GemmGroup> groups) {
  return RunGrouped(GroupedMode::kWeightGrad, dy, &x, groups, nullptr, "GroupedMatmulWeightGrad");
}

// lhs is x (forward), dy (input grad) or dy (weight grad, with x_for_wgrad = x).
absl::Status CudaBackend::RunGrouped(GroupedMode mode, const Tensor& lhs, const Tensor* x_for_wgrad,
                                     absl::Span<const GemmGroup> groups, Tensor* out, absl::string_view op) {
  const bool wgrad = mode == GroupedMode::kWeightGrad;
  RETURN_IF_ERROR(CheckFloat(lhs, op, wgrad || mode == GroupedMode::kInputGrad ? "dy" : "x"));
  if (wgrad) RETURN_IF_ERROR(CheckFloat(*x_for_wgrad, op, "x"));
  if (out != nullptr) RETURN_IF_ERROR(CheckFloat(*out, op, mode == GroupedMode::kForward ? "y" : "dx"));
  const Tensor lhs2 = lhs.Flat2D();
  const int64_t rows = lhs2.dim(0);

  // The activations fix the expert shape [w_out, w_in]; then every group is checked against it (nothing
  // is enqueued on failure).
  int64_t w_out = 0, w_in = 0;
  switch (mode) {
    case GroupedMode::kForward:
      w_in = lhs2.dim(1);
      RETURN_IF_ERROR(Check2D(*out, rows, -1, op, "y"));
      w_out = out->Flat2D().dim(1);
      break;
    case GroupedMode::kInputGrad:
      w_out = lhs2.dim(1);
      RETURN_IF_ERROR(Check2D(*out, rows, -1, op, "dx"));
      w_in = out->Flat2D().dim(1);
      break;
    case GroupedMode::kWeightGrad:
      w_out = lhs2.dim(1);
      RETURN_IF_ERROR(Check2D(*x_for_wgrad, rows, -1, op, "x"));
      w_in = x_for_wgrad->Flat2D().dim(1);
      break;
  }
  const std::vector<int64_t> w_shape = {w_out, w_in};
  std::vector<std::pair<int64_t, int64_t>> ranges;
  DType w_dtype = DType::kF32, g_dtype = DType::kF32;
  bool have_w = false, have_g = false;
  for (size_t i = 0; i < groups.size(); ++i) {
    const GemmGroup& g = groups[i];
    const std::string arg = absl::StrCat("groups[", i, "]");
    if (g.rows < 0 || g.row_begin < 0 || g.row_begin + g.rows > rows) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, " rows [", g.row_begin, ", ", g.row_begin + g.rows,
                                                     ") outside [0, ", rows, ")"));
    }
    if (g.weight == nullptr) return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, ".weight is null"));
    RETURN_IF_ERROR(CheckFloat(*g.weight, op, arg + ".weight"));
    if (g.weight->shape() != w_shape) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, ".weight has shape ", ShapeString(g.weight->shape()),
                                                     ", expected ", ShapeString(w_shape)));
    }
    if (!have_w) {
      w_dtype = g.weight->dtype();
      have_w = true;
    } else if (g.weight->dtype() != w_dtype) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, ".weight is ", DTypeName(g.weight->dtype()),
                                                     ", groups[0].weight is ", DTypeName(w_dtype)));
    }
    if (wgrad && g.weight_grad != nullptr) {
      RETURN_IF_ERROR(CheckFloat(*g.weight_grad, op, arg + ".weight_grad"));
      if (g.weight_grad->shape() != w_shape) {
        return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, ".weight_grad has shape ",
                                                       ShapeString(g.weight_grad->shape()), ", expected ",
                                                       ShapeString(w_shape)));
      }
      if (!have_g) {
        g_dtype = g.weight_grad->dtype();
        have_g = true;
      } else if (g.weight_grad->dtype() != g_dtype) {
        return absl::InvalidArgumentError(absl::StrCat(op, ": every weight_grad must have one dtype"));
      }
    }
    if (g.rows > 0) ranges.emplace_back(g.row_begin, g.row_begin + g.rows);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": groups overlap at row ", ranges[i].first));
    }
  }
  if (!have_w) return absl::OkStatus();
  for (int64_t v : {rows, w_in, w_out}) RETURN_IF_ERROR(CheckIntRange(v, op, "dimension"));

  // Row-major problems, see GemmProblem.
  DType dta, dtb, dtc;
  std::vector<k::GroupedOperand> operands;
  operands.reserve(groups.size());
  for (const GemmGroup& g : groups) {
    void* grad = g.weight_grad == nullptr ? nullptr : g.weight_grad->raw();
    operands.push_back({g.row_begin, g.rows, g.weight->raw(), grad});
  }
  k::GroupedActivations act;
  act.lhs = lhs.raw();
  act.lhs_size = DTypeSize(lhs.dtype());
  if (wgrad) {
    act.x = x_for_wgrad->raw();
    act.x_size = DTypeSize(x_for_wgrad->dtype());
  } else {
    act.out = out->raw();
    act.out_size = DTypeSize(out->dtype());
  }
  std::vector<k::GemmProblem> probs = k::GroupedProblems(mode, act, w_out, w_in, operands);
  switch (mode) {
    case GroupedMode::kForward: dta = lhs.dtype(), dtb = w_dtype, dtc = out->dtype(); break;
    case GroupedMode::kInputGrad: dta = lhs.dtype(), dtb = w_dtype, dtc = out->dtype(); break;
    default: dta = lhs.dtype(), dtb = x_for_wgrad->dtype(), dtc = g_dtype; break;
  }
  RETURN_IF_ERROR(CheckMatmulDtypes(dta, dtb, dtc, op));
  RETURN_IF_ERROR(Enter());
  if (probs.empty()) return absl::OkStatus();
  // Weight gradients may be shared between groups (one slot served by several weights accumulates into
  // one gradient). Problems of one launch run concurrently and would race on a shared C, so then each
  // problem gets its own launch (stream order serializes them).
  bool shared_c = false;
  if (wgrad) {
    std::vector<std::pair<const char*, const char*>> c_ranges;
    const size_t c_bytes = static_cast<size_t>(w_out * w_in) * DTypeSize(g_dtype);
    for (const k::GemmProblem& p : probs) c_ranges.emplace_back(static_cast<const char*>(p.c), static_cast<const char*>(p.c) + c_bytes);
    std::sort(c_ranges.begin(), c_ranges.end());
    for (size_t i = 1; i < c_ranges.size() && !shared_c; ++i) shared_c = c_ranges[i].first < c_ranges[i - 1].second;
  }
  if (shared_c) {
    for (const k::GemmProblem& p : probs) {
      RETURN_IF_ERROR(LaunchGrouped({&p, 1}, dta, dtb, dtc, op));
    }
    return absl::OkStatus();
  }
  return LaunchGrouped(probs, dta, dtb, dtc, op);
}

cublasComputeType_t CudaBackend::ComputeType(DType a) const {
  return a == DType::kF32 && allow_tf32_ ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

// cuBLAS sees each row-major problem as column-major C^T = opB(B)^T opA(A)^T (see the top comment).
// Problems with equal scalar arguments share one group. UNIMPLEMENTED when cuBLAS does not support the
// type combination in its grouped API (nothing was enqueued then).
absl::Status CudaBackend::CublasGrouped(absl::Span<const k::GemmProblem> probs, DType dtab, DType dtc,
                                        absl::string_view op) {
  const std::map<ShapeKey, std::vector<const k::GemmProblem*>> by_shape = ByShape(probs);
  const int gcount = static_cast<int>(by_shape.size());
  const size_t total = probs.size();
  std::vector<cublasOperation_t> ta, tb;
  std::vector<int> m, n, kk, lda, ldb, ldc, size;
  std::vector<float> alpha, beta;
  std::vector<const void*> ptrs(3 * total);
  size_t i = 0;
  for (const auto& [key, members] : by_shape) {
    ta.push_back(Op(key.tb));
    tb.push_back(Op(key.ta));
    m.push_back(static_cast<int>(key.n));
    n.push_back(static_cast<int>(key.m));
    kk.push_back(static_cast<int>(key.k));
    lda.push_back(static_cast<int>(key.ldb));
    ldb.push_back(static_cast<int>(key.lda));
    ldc.push_back(static_cast<int>(key.ldc));
    alpha.push_back(key.alpha);
    beta.push_back(key.beta);
    size.push_back(static_cast<int>(members.size()));
    for (const k::GemmProblem* p : members) {
      ptrs[i] = p->b;              // cuBLAS A array
      ptrs[total + i] = p->a;      // cuBLAS B array
      ptrs[2 * total + i] = p->c;  // cuBLAS C array
      ++i;
    }
  }
  ASSIGN_OR_RETURN(void* dev, uploads_->Upload(ptrs.data(), ptrs.size() * sizeof(void*)));
  const void* const* dptr = static_cast<const void* const*>(dev);
  const cublasStatus_t st = cublasGemmGroupedBatchedEx(
      cublas_, ta.data(), tb.data(), m.data(), n.data(), kk.data(), alpha.data(), dptr, CudaType(dtab), lda.data(),
      dptr + total, CudaType(dtab), ldb.data(), beta.data(), const_cast<void* const*>(dptr + 2 * total), CudaType(dtc),
      ldc.data(), gcount, size.data(), ComputeType(dtab));
  if (st == CUBLAS_STATUS_NOT_SUPPORTED) {
    return absl::UnimplementedError(absl::StrCat(op, ": cublasGemmGroupedBatchedEx does not support ", DTypeName(dtab),
                                                 " inputs with ", DTypeName(dtc), " output"));
  }
  return CublasStatus(st, absl::StrCat(op, ": cublasGemmGroupedBatchedEx"));
}

absl::Status CudaBackend::CublasBatched(absl::Span<const k::GemmProblem> probs, DType dtab, DType dtc,
                                        absl::string_view op) {
  for (const auto& [key, members] : ByShape(probs)) {
    const size_t count = members.size();
    std::vector<const void*> ptrs(3 * count);
    for (size_t i = 0; i < count; ++i) {
      ptrs[i] = members[i]->b;              // cuBLAS A array
      ptrs[count + i] = members[i]->a;      // cuBLAS B array
      ptrs[2 * count + i] = members[i]->c;  // cuBLAS C array
    }
    ASSIGN_OR_RETURN(void* dev, uploads_->Upload(ptrs.data(), ptrs.size() * sizeof(void*)));
    const void* const* dptr = static_cast<const void* const*>(dev);
    const cublasStatus_t st = cublasGemmBatchedEx(
        cublas_, Op(key.tb), Op(key.ta), static_cast<int>(key.n), static_cast<int>(key.m), static_cast<int>(key.k),
        &key.alpha, dptr, CudaType(dtab), static_cast<int>(key.ldb), dptr + count, CudaType(dtab),
        static_cast<int>(key.lda), &key.beta, const_cast<void* const*>(dptr + 2 * count), CudaType(dtc),
        static_cast<int>(key.ldc), static_cast<int>(count), ComputeType(dtab), CUBLAS_GEMM_DEFAULT);
    if (st == CUBLAS_STATUS_NOT_SUPPORTED) {
      // Only possible for the first shape: every shape of one call has the same types.
      return absl::UnimplementedError(absl::StrCat(op, ": cublasGemmBatchedEx does not support ", DTypeName(dtab),
                                                   " inputs with ", DTypeName(dtc), " output"));
    }
    RETURN_IF_ERROR(CublasStatus(st, absl::StrCat(op, ": cublasGemmBatchedEx")));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::LaunchGrouped(absl::Span<const cuda_kernels::GemmProblem> problems, DType dta, DType dtb,
                                        DType dtc, absl::string_view op) {
  std::vector<k::GemmProblem> probs(problems.begin(), problems.end());

  if (grouped_impl_ == GroupedGemmImpl::kCublasChunks) {
    k::RowChunks chunks = k::SplitIntoRowChunks(probs, kGroupedChunkRows, DTypeSize(dta), DTypeSize(dtc));
    if (!chunks.full.empty()) {
      const absl::Status batched = CublasBatched(chunks.full, dta, dtc, op);
      if (batched.code() == absl::StatusCode::kUnimplemented) {
        chunks.rest.insert(chunks.rest.end(), chunks.full.begin(), chunks.full.end());
      } else {
        RETURN_IF_ERROR(batched);
      }
    }
    probs = std::move(chunks.rest);
    if (probs.empty()) return absl::OkStatus();
  }
  // RunGrouped checked CheckMatmulDtypes, which is also what cuBLAS needs.
  if (grouped_impl_ == GroupedGemmImpl::kCublas || grouped_impl_ == GroupedGemmImpl::kCublasChunks) {
    absl::Status grouped = CublasGrouped(probs, dta, dtc, op);
    if (grouped.code() != absl::StatusCode::kUnimplemented) return grouped;
    // The grouped API refuses this type combination: one cublasGemmEx per problem, same stream.
    for (const k::GemmProblem& p : probs) {
      RETURN_IF_ERROR(CublasStatus(
          cublasGemmEx(cublas_, Op(p.trans_b), Op(p.trans_a), static_cast<int>(p.n), static_cast<int>(p.m),
                       static_cast<int>(p.k), &p.alpha, p.b, CudaType(dtb), static_cast<int>(p.ldb), p.a, CudaType(dta),
                       static_cast<int>(p.lda), &p.beta, p.c, CudaType(dtc), static_cast<int>(p.ldc), ComputeType(dta),
                       CUBLAS_GEMM_DEFAULT),
          absl::StrCat(op, ": cublasGemmEx")));
    }
    return absl::OkStatus();
  }
  const int64_t tiles = k::AssignGroupedTiles(probs);
  ASSIGN_OR_RETURN(void* dev, uploads_->Upload(probs.data(), probs.size() * sizeof(k::GemmProblem)));
  return CudaStatus(k::GroupedGemm(static_cast<const k::GemmProblem*>(dev), static_cast<int>(probs.size()), tiles,
                                   static_cast<int>(dta), static_cast<int>(dtb), static_cast<int>(dtc), stream()),
                    absl::StrCat(op, ": grouped kernel"));
}

}  // namespace tessera::cuda
