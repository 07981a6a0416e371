// Argument validation shared by the CPU backend's ops. Every check returns OK or INVALID_ARGUMENT
// with a message of the form "<Op>: <arg> has shape [5], expected [4]", so callers can tell exactly
// which argument was wrong. Checks run before an op writes anything, so a rejected call leaves every
// output untouched.
#pragma once

#include <cstdint>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "core/tensor/tensor.h"

namespace tessera::cpu {

// t is defined, on the CPU and of `dtype`.
absl::Status CheckTensor(absl::string_view op, absl::string_view arg, const Tensor& t, DType dtype);
inline absl::Status CheckF32(absl::string_view op, absl::string_view arg, const Tensor& t) {
  return CheckTensor(op, arg, t, DType::kF32);
}
inline absl::Status CheckI32(absl::string_view op, absl::string_view arg, const Tensor& t) {
  return CheckTensor(op, arg, t, DType::kI32);
}

// t has exactly `shape`.
absl::Status CheckShape(absl::string_view op, absl::string_view arg, const Tensor& t,
                        const std::vector<int64_t>& shape);
// t is an "[rows, cols]" matrix in the interface's sense: any rank >= 1 whose trailing dim is `cols`
// and whose leading dims multiply to `rows`. A negative rows/cols accepts any value.
absl::Status CheckMatrix(absl::string_view op, absl::string_view arg, const Tensor& t, int64_t rows,
                         int64_t cols);
// t has `n` elements.
absl::Status CheckNumel(absl::string_view op, absl::string_view arg, const Tensor& t, int64_t n);
// Every idx[i] lies in [0, limit).
absl::Status CheckIndices(absl::string_view op, absl::string_view arg, const int32_t* idx, int64_t n,
                          int64_t limit);

// The "[N, D]" reading of a tensor: D = trailing dim (1 for rank 0), N = numel / D.
inline int64_t Cols(const Tensor& t) { return t.rank() == 0 ? 1 : t.dim(-1); }
inline int64_t Rows(const Tensor& t) {
  int64_t n = 1;
  for (int i = 0; i + 1 < t.rank(); ++i) n *= t.dim(i);
  return n;
}

// Half-open byte ranges [begin, end) of two tensors overlap.
bool Overlaps(const Tensor& a, const Tensor& b);

}  // namespace tessera::cpu
