#include "core/backend/cpu/cpu_check.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace tessera::cpu {
namespace {

std::string Dims(int64_t rows, int64_t cols) {
  return absl::StrCat("[", rows < 0 ? std::string("*") : absl::StrCat(rows), ",",
                      cols < 0 ? std::string("*") : absl::StrCat(cols), "]");
}

}  // namespace

absl::Status CheckTensor(absl::string_view op, absl::string_view arg, const Tensor& t, DType dtype) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, " is undefined"));
  if (t.device() != DeviceKind::kCpu) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", arg, " is on ", DeviceName(t.device()), ", expected cpu"));
  }
  if (t.dtype() != dtype) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, " has dtype ", DTypeName(t.dtype()),
                                                   ", expected ", DTypeName(dtype)));
  }
  for (int64_t d : t.shape()) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": ", arg, " has negative shape ", ShapeString(t.shape())));
    }
  }
  if (t.numel() > 0 && t.raw() == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, " has no data"));
  }
  return absl::OkStatus();
}

absl::Status CheckShape(absl::string_view op, absl::string_view arg, const Tensor& t,
                        const std::vector<int64_t>& shape) {
  if (t.shape() != shape) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, " has shape ", ShapeString(t.shape()),
                                                   ", expected ", ShapeString(shape)));
  }
  return absl::OkStatus();
}

absl::Status CheckMatrix(absl::string_view op, absl::string_view arg, const Tensor& t, int64_t rows,
                         int64_t cols) {
  const bool ok = t.rank() >= 1 && (cols < 0 || Cols(t) == cols) && (rows < 0 || Rows(t) == rows);
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, " has shape ", ShapeString(t.shape()),
                                                   ", expected ", Dims(rows, cols),
                                                   " (any rank with that trailing dim and row count)"));
  }
  return absl::OkStatus();
}

absl::Status CheckNumel(absl::string_view op, absl::string_view arg, const Tensor& t, int64_t n) {
  if (t.numel() != n) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, " has shape ", ShapeString(t.shape()),
                                                   " (", t.numel(), " elements), expected ", n,
                                                   " elements"));
  }
  return absl::OkStatus();
}

absl::Status CheckIndices(absl::string_view op, absl::string_view arg, const int32_t* idx, int64_t n,
                          int64_t limit) {
  for (int64_t i = 0; i < n; ++i) {
    if (idx[i] < 0 || idx[i] >= limit) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": ", arg, "[", i, "] = ", idx[i], " is out of range [0, ", limit, ")"));
    }
  }
  return absl::OkStatus();
}

bool Overlaps(const Tensor& a, const Tensor& b) {
  if (a.nbytes() == 0 || b.nbytes() == 0) return false;
  const char* a0 = static_cast<const char*>(a.raw());
  const char* b0 = static_cast<const char*>(b.raw());
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

}  // namespace tessera::cpu
