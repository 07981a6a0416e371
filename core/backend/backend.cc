#include "core/backend/backend.h"

#include <climits>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "core/util/status_macros.h"

namespace tessera {

absl::Status CheckMatmulDtypes(DType a, DType b, DType c, absl::string_view op) {
  if (a != b) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": A and B must share a dtype, got ", DTypeName(a), " and ",
                                                   DTypeName(b)));
  }
  if (c != a && c != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": C must be f32 or ", DTypeName(a), ", got ", DTypeName(c)));
  }
  return absl::OkStatus();
}

absl::StatusOr<Tensor> Backend::Zeros(std::vector<int64_t> shape, DType dtype) {
  ASSIGN_OR_RETURN(Tensor t, Alloc(std::move(shape), dtype));
  RETURN_IF_ERROR(Fill(t, 0.0f));
  return t;
}

absl::StatusOr<Tensor> Backend::FromHost(const std::vector<float>& values, std::vector<int64_t> shape) {
  ASSIGN_OR_RETURN(Tensor t, Alloc(std::move(shape), DType::kF32));
  if (static_cast<size_t>(t.numel()) != values.size()) {
    return absl::InvalidArgumentError(absl::StrCat("FromHost: ", values.size(), " values for shape ",
                                                   ShapeString(t.shape())));
  }
  RETURN_IF_ERROR(CopyFromHost(values.data(), t.nbytes(), t));
  return t;
}

absl::StatusOr<Tensor> Backend::FromHost(const std::vector<int32_t>& values, std::vector<int64_t> shape) {
  ASSIGN_OR_RETURN(Tensor t, Alloc(std::move(shape), DType::kI32));
  if (static_cast<size_t>(t.numel()) != values.size()) {
    return absl::InvalidArgumentError(absl::StrCat("FromHost: ", values.size(), " values for shape ",
                                                   ShapeString(t.shape())));
  }
  RETURN_IF_ERROR(CopyFromHost(values.data(), t.nbytes(), t));
  return t;
}

absl::StatusOr<std::vector<float>> Backend::ToHostF32(const Tensor& t) {
  std::vector<float> out(t.numel());
  if (t.dtype() == DType::kF32) {
    RETURN_IF_ERROR(CopyToHost(t, out.data(), t.nbytes()));
    return out;
  }
  if (t.dtype() != DType::kBF16 && t.dtype() != DType::kF16) {
    return absl::InvalidArgumentError(absl::StrCat("ToHostF32: not a float tensor: ", t.DebugString()));
  }
  std::vector<uint16_t> half(t.numel());
  RETURN_IF_ERROR(CopyToHost(t, half.data(), t.nbytes()));
  for (size_t i = 0; i < half.size(); ++i) {
    out[i] = t.dtype() == DType::kBF16 ? Bf16ToF32(half[i]) : F16ToF32(half[i]);
  }
  return out;
}

absl::Status Backend::CopyMany(absl::Span<const CopyPair> pairs) {
  for (size_t i = 0; i < pairs.size(); ++i) {
    if (pairs[i].src == nullptr || pairs[i].dst == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("CopyMany: pairs[", i, "] has a null tensor"));
    }
    if (absl::Status s = Copy(*pairs[i].src, *pairs[i].dst); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("CopyMany: pairs[", i, "]: ", s.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status Backend::AdamWMany(absl::Span<const AdamWTensor> entries, const AdamWParams& p) {
  for (size_t i = 0; i < entries.size(); ++i) {
    const AdamWTensor& e = entries[i];
    if (e.param == nullptr || e.grad == nullptr || e.m == nullptr || e.v == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("AdamWMany: entries[", i, "] has a null tensor"));
    }
    AdamWParams pi = p;
    pi.weight_decay = e.weight_decay;
    absl::Status s = AdamW(*e.param, *e.grad, *e.m, *e.v, pi);
    if (s.ok() && e.narrow != nullptr) s = Copy(*e.param, *e.narrow);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat("AdamWMany: entries[", i, "]: ", s.message()));
  }
  return absl::OkStatus();
}

namespace {

absl::Status ExpectDtype(const Tensor& t, DType dtype, absl::string_view op, absl::string_view arg) {
  if (!t.defined() || t.dtype() != dtype) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, " must be an ", DTypeName(dtype), " tensor, got ",
                                                   t.DebugString()));
  }
  return absl::OkStatus();
}

absl::Status ExpectNumel(const Tensor& t, int64_t numel, absl::string_view op, absl::string_view arg) {
  if (t.numel() != numel) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, " must have ", numel, " elements, got ",
                                                   t.DebugString()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<MoeSortDims> CheckMoeSortAssignments(const Tensor& topk_idx, const Tensor& topk_w,
                                                    const Tensor& token_rank, const Tensor& weight_table,
                                                    const Tensor& token_idx, const Tensor& gate_w,
                                                    const Tensor& offsets) {
  constexpr absl::string_view kOp = "MoeSortAssignments";
  RETURN_IF_ERROR(ExpectDtype(topk_idx, DType::kI32, kOp, "topk_idx"));
  RETURN_IF_ERROR(ExpectDtype(topk_w, DType::kF32, kOp, "topk_w"));
  RETURN_IF_ERROR(ExpectDtype(token_rank, DType::kI32, kOp, "token_rank"));
  RETURN_IF_ERROR(ExpectDtype(weight_table, DType::kI32, kOp, "weight_table"));
  RETURN_IF_ERROR(ExpectDtype(token_idx, DType::kI32, kOp, "token_idx"));
  RETURN_IF_ERROR(ExpectDtype(gate_w, DType::kF32, kOp, "gate_w"));
  RETURN_IF_ERROR(ExpectDtype(offsets, DType::kI32, kOp, "offsets"));
  if (topk_idx.rank() != 2 || weight_table.rank() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": topk_idx and weight_table must be rank 2, got ",
                                                   topk_idx.DebugString(), " and ", weight_table.DebugString()));
  }
  MoeSortDims d;
  d.n = topk_idx.dim(0);
  d.k = topk_idx.dim(1);
  d.ranks = weight_table.dim(0);
  d.experts = weight_table.dim(1);
  d.sets = offsets.numel() - 1;
  const int64_t m = d.n * d.k;
  RETURN_IF_ERROR(ExpectNumel(topk_w, m, kOp, "topk_w"));
  RETURN_IF_ERROR(ExpectNumel(token_rank, d.n, kOp, "token_rank"));
  RETURN_IF_ERROR(ExpectNumel(token_idx, m, kOp, "token_idx"));
  RETURN_IF_ERROR(ExpectNumel(gate_w, m, kOp, "gate_w"));
  if (d.sets < 0) return absl::InvalidArgumentError(absl::StrCat(kOp, ": offsets must have W + 1 >= 1 elements"));
  if (m > INT32_MAX || d.sets >= INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": ", m, " assignments or ", d.sets,
                                                   " weight sets exceed the i32 index range"));
  }
  return d;
}

// Generic MoeSortAssignments: through the host (the reference the CUDA kernels are tested against).
absl::Status Backend::MoeSortAssignments(const Tensor& topk_idx, const Tensor& topk_w, const Tensor& token_rank,
                                         const Tensor& weight_table, Tensor& token_idx, Tensor& gate_w,
                                         Tensor& offsets) {
  constexpr absl::string_view kOp = "MoeSortAssignments";
  ASSIGN_OR_RETURN(const MoeSortDims dims,
                   CheckMoeSortAssignments(topk_idx, topk_w, token_rank, weight_table, token_idx, gate_w, offsets));
  const int64_t k = dims.k, m = dims.n * dims.k, ranks = dims.ranks, experts = dims.experts, sets = dims.sets;
  ASSIGN_OR_RETURN(std::vector<int32_t> idx, ToHostI32(topk_idx));
  ASSIGN_OR_RETURN(std::vector<float> w, ToHostF32(topk_w));
  ASSIGN_OR_RETURN(std::vector<int32_t> rank, ToHostI32(token_rank));
  ASSIGN_OR_RETURN(std::vector<int32_t> table, ToHostI32(weight_table));
  std::vector<int32_t> set(m);
  for (int64_t a = 0; a < m; ++a) {
    const int64_t t = a / k;
    if (rank[t] < 0 || rank[t] >= ranks) {
      return absl::InvalidArgumentError(absl::StrCat(kOp, ": token_rank[", t, "] = ", rank[t], " is outside [0, ",
                                                     ranks, ")"));
    }
    if (idx[a] < 0 || idx[a] >= experts) {
      return absl::InvalidArgumentError(absl::StrCat(kOp, ": topk_idx[", a, "] = ", idx[a], " is outside [0, ",
                                                     experts, ")"));
    }
    set[a] = table[rank[t] * experts + idx[a]];
    if (set[a] < 0 || set[a] >= sets) {
      return absl::InvalidArgumentError(absl::StrCat(kOp, ": weight_table[", rank[t], ", ", idx[a], "] = ", set[a],
                                                     " is outside [0, ", sets, ")"));
    }
  }
  // Counting sort by set: stable, so ties keep the assignment order.
  std::vector<int32_t> off(sets + 1, 0);
  for (int64_t a = 0; a < m; ++a) ++off[set[a] + 1];
  for (int64_t s = 0; s < sets; ++s) off[s + 1] += off[s];
  std::vector<int32_t> next(off.begin(), off.end() - 1), rows(m);
  std::vector<float> gw(m);
  for (int64_t a = 0; a < m; ++a) {
    const int32_t i = next[set[a]]++;
    rows[i] = static_cast<int32_t>(a / k);
    gw[i] = w[a];
  }
  RETURN_IF_ERROR(CopyFromHost(rows.data(), rows.size() * sizeof(int32_t), token_idx));
  RETURN_IF_ERROR(CopyFromHost(gw.data(), gw.size() * sizeof(float), gate_w));
  return CopyFromHost(off.data(), off.size() * sizeof(int32_t), offsets);
}

// Generic GroupedMatmulByOffsets: reads the offsets to the host and runs GroupedMatmul.
absl::Status Backend::GroupedMatmulByOffsets(const Tensor& x, absl::Span<const Tensor* const> weights,
                                             const Tensor& offsets, Tensor& y) {
  constexpr absl::string_view kOp = "GroupedMatmulByOffsets";
  RETURN_IF_ERROR(ExpectDtype(offsets, DType::kI32, kOp, "offsets"));
  if (offsets.numel() != static_cast<int64_t>(weights.size()) + 1) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": offsets must have weights.size() + 1 = ",
                                                   weights.size() + 1, " elements, got ", offsets.DebugString()));
  }
  if (!x.defined() || !y.defined()) return absl::InvalidArgumentError(absl::StrCat(kOp, ": x or y is undefined"));
  if (!weights.empty() && weights[0] != nullptr) {
    RETURN_IF_ERROR(CheckMatmulDtypes(x.dtype(), weights[0]->dtype(), y.dtype(), kOp));
  }
  const int64_t m = x.Flat2D().dim(0);
  ASSIGN_OR_RETURN(std::vector<int32_t> off, ToHostI32(offsets));
  std::vector<GemmGroup> groups;
  for (size_t w = 0; w < weights.size(); ++w) {
    if (weights[w] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(kOp, ": weights[", w, "] is null"));
    }
    if (off[w] < 0 || off[w + 1] < off[w] || off[w + 1] > m) {
      return absl::InvalidArgumentError(absl::StrCat(kOp, ": offsets[", w, "..", w + 1, "] = ", off[w], "..",
                                                     off[w + 1], " is not a row range of [0, ", m, "]"));
    }
    if (off[w + 1] > off[w]) groups.push_back({off[w], off[w + 1] - off[w], weights[w], nullptr});
  }
  if (groups.empty()) return absl::OkStatus();
  return GroupedMatmul(x, groups, y);
}

absl::StatusOr<std::vector<int32_t>> Backend::ToHostI32(const Tensor& t) {
  if (t.dtype() != DType::kI32) {
    return absl::InvalidArgumentError(absl::StrCat("ToHostI32: not an i32 tensor: ", t.DebugString()));
  }
  std::vector<int32_t> out(t.numel());
  RETURN_IF_ERROR(CopyToHost(t, out.data(), t.nbytes()));
  return out;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const std::string& spec, const BackendOptions& options) {
  if (spec == "cpu") return MakeCpuBackend(options);
  if (spec == "cuda") return MakeCudaBackend(0, options);
  if (absl::StartsWith(spec, "cuda:")) {
    int ordinal = 0;
    if (!absl::SimpleAtoi(spec.substr(5), &ordinal) || ordinal < 0) {
      return absl::InvalidArgumentError(absl::StrCat("bad device '", spec, "': expected cuda:N"));
    }
    return MakeCudaBackend(ordinal, options);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown device '", spec, "': expected cpu, cuda or cuda:N"));
}

absl::Status Backend::RopeFreqs(Tensor& x, const Tensor& positions, absl::Span<const float> inv_freq,
                                bool inverse) {
  if (x.rank() != 3 || x.dim(2) % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("RopeFreqs: x must be [N,H,head_dim] with even head_dim, got ",
                                                   ShapeString(x.shape())));
  }
  const int64_t n = x.dim(0), h = x.dim(1), hd = x.dim(2), half = hd / 2;
  if (static_cast<int64_t>(inv_freq.size()) != half) {
    return absl::InvalidArgumentError(absl::StrCat("RopeFreqs: inv_freq has ", inv_freq.size(), " values, head_dim / 2 is ",
                                                   half));
  }
  if (positions.dtype() != DType::kI32 || positions.numel() != n) {
    return absl::InvalidArgumentError(absl::StrCat("RopeFreqs: positions must be ", n, " i32 values"));
  }
  ASSIGN_OR_RETURN(std::vector<float> v, ToHostF32(x));
  ASSIGN_OR_RETURN(std::vector<int32_t> pos, ToHostI32(positions));
  const double sign = inverse ? -1.0 : 1.0;
  std::vector<float> cs(half), sn(half);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const double a = static_cast<double>(pos[t]) * static_cast<double>(inv_freq[i]);
      cs[i] = static_cast<float>(std::cos(a));
      sn[i] = static_cast<float>(sign * std::sin(a));
    }
    for (int64_t head = 0; head < h; ++head) {
      float* lo = v.data() + (t * h + head) * hd;
      float* hi = lo + half;
      for (int64_t i = 0; i < half; ++i) {
        const float a = lo[i], b = hi[i];
        lo[i] = a * cs[i] - b * sn[i];
        hi[i] = b * cs[i] + a * sn[i];
      }
    }
  }
  if (x.dtype() == DType::kF32) return CopyFromHost(v.data(), v.size() * sizeof(float), x);
  ASSIGN_OR_RETURN(Tensor wide, FromHost(v, x.shape()));
  return Copy(wide, x);  // rounds to x's dtype
}

}  // namespace tessera
