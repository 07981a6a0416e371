#include "core/backend/backend.h"

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

absl::StatusOr<std::vector<int32_t>> Backend::ToHostI32(const Tensor& t) {
  if (t.dtype() != DType::kI32) {
    return absl::InvalidArgumentError(absl::StrCat("ToHostI32: not an i32 tensor: ", t.DebugString()));
  }
  std::vector<int32_t> out(t.numel());
  RETURN_IF_ERROR(CopyToHost(t, out.data(), t.nbytes()));
  return out;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const std::string& spec, const BackendOptions& options) {
  if (spec == "cpu") return MakeCpuBackend();
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

}  // namespace tessera
