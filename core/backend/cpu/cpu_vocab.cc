// CPU vocabulary ops: log-softmax and cross-entropy (forward/backward) over rows of logits [N,V].
//
// Math, per row: m = max(x), lse = m + log(sum exp(x - m))   (max subtraction: no overflow)
//   LogSoftmax:            out = x - lse                     (out may alias logits)
//   CrossEntropyForward:   loss = lse - x[t] for t = targets[n] >= 0, 0 where t < 0 (ignored);
//                          lse[n] written for every row (ignored ones too)
//   CrossEntropyBackward:  dlogits = dloss[n] * (exp(x - lse[n]) - onehot(t)); ignored rows get 0
// Targets >= V are INVALID_ARGUMENT. The exp-sum is a float sum over the row; the max subtraction keeps
// every term in (0, 1], so it is accurate to ~1e-6 relative for vocabularies of 10^5.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/backend/cpu/cpu_backend_internal.h"
#include "core/backend/cpu/cpu_check.h"
#include "core/backend/cpu/cpu_kernels.h"
#include "core/util/parallel.h"
#include "core/util/status_macros.h"

namespace tessera::cpu {
namespace {

float RowLse(const float* x, int64_t v) {
  const float m = MaxOf(x, v);
  if (std::isinf(m)) return m;  // all -inf (lse -inf) or some +inf
  float s = 0.0f;
  for (int64_t j = 0; j < v; ++j) s += std::exp(x[j] - m);
  return m + std::log(s);
}

absl::Status CheckTargets(absl::string_view op, const Tensor& targets, int64_t n, int64_t v) {
  RETURN_IF_ERROR(CheckI32(op, "targets", targets));
  RETURN_IF_ERROR(CheckNumel(op, "targets", targets, n));
  const int32_t* t = targets.data<int32_t>();
  for (int64_t i = 0; i < n; ++i) {
    if (t[i] >= v) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": targets[", i, "] = ", t[i], " is out of range [0, ", v, ") (negative = ignored)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CpuBackend::LogSoftmax(const Tensor& logits, Tensor& out) {
  constexpr char kOp[] = "LogSoftmax";
  RETURN_IF_ERROR(CheckF32(kOp, "logits", logits));
  RETURN_IF_ERROR(CheckF32(kOp, "out", out));
  RETURN_IF_ERROR(CheckMatrix(kOp, "logits", logits, -1, -1));
  const int64_t n = Rows(logits), v = Cols(logits);
  RETURN_IF_ERROR(CheckMatrix(kOp, "out", out, n, v));
  const float* px = logits.data<float>();
  float* po = out.data<float>();
  ParallelFor(n, GrainFor(2 * v), [&](int64_t s, int64_t e) {
    for (int64_t row = s; row < e; ++row) {
      const float lse = RowLse(px + row * v, v);
      const float* x = px + row * v;
      float* o = po + row * v;
      for (int64_t j = 0; j < v; ++j) o[j] = x[j] - lse;
    }
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::CrossEntropyForward(const Tensor& logits, const Tensor& targets, Tensor& loss,
                                             Tensor* lse) {
  constexpr char kOp[] = "CrossEntropyForward";
  RETURN_IF_ERROR(CheckF32(kOp, "logits", logits));
  RETURN_IF_ERROR(CheckF32(kOp, "loss", loss));
  RETURN_IF_ERROR(CheckMatrix(kOp, "logits", logits, -1, -1));
  const int64_t n = Rows(logits), v = Cols(logits);
  RETURN_IF_ERROR(CheckTargets(kOp, targets, n, v));
  RETURN_IF_ERROR(CheckNumel(kOp, "loss", loss, n));
  if (lse != nullptr) {
    RETURN_IF_ERROR(CheckF32(kOp, "lse", *lse));
    RETURN_IF_ERROR(CheckNumel(kOp, "lse", *lse, n));
  }
  const float* px = logits.data<float>();
  const int32_t* pt = targets.data<int32_t>();
  float* pl = loss.data<float>();
  float* pse = lse ? lse->data<float>() : nullptr;
  ParallelFor(n, GrainFor(v), [&](int64_t s, int64_t e) {
    for (int64_t row = s; row < e; ++row) {
      const float l = RowLse(px + row * v, v);
      pl[row] = pt[row] < 0 ? 0.0f : l - px[row * v + pt[row]];
      if (pse) pse[row] = l;
    }
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::CrossEntropyBackward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                              const Tensor& dloss, Tensor& dlogits) {
  constexpr char kOp[] = "CrossEntropyBackward";
  RETURN_IF_ERROR(CheckF32(kOp, "logits", logits));
  RETURN_IF_ERROR(CheckF32(kOp, "lse", lse));
  RETURN_IF_ERROR(CheckF32(kOp, "dloss", dloss));
  RETURN_IF_ERROR(CheckF32(kOp, "dlogits", dlogits));
  RETURN_IF_ERROR(CheckMatrix(kOp, "logits", logits, -1, -1));
  const int64_t n = Rows(logits), v = Cols(logits);
  RETURN_IF_ERROR(CheckTargets(kOp, targets, n, v));
  RETURN_IF_ERROR(CheckNumel(kOp, "lse", lse, n));
  RETURN_IF_ERROR(CheckNumel(kOp, "dloss", dloss, n));
  RETURN_IF_ERROR(CheckMatrix(kOp, "dlogits", dlogits, n, v));
  const float* px = logits.data<float>();
  const int32_t* pt = targets.data<int32_t>();
  const float* pse = lse.data<float>();
  const float* pdl = dloss.data<float>();
  float* pd = dlogits.data<float>();
  ParallelFor(n, GrainFor(v), [&](int64_t s, int64_t e) {
    for (int64_t row = s; row < e; ++row) {
      float* d = pd + row * v;
      const int32_t t = pt[row];
      if (t < 0) {
        std::fill_n(d, v, 0.0f);
        continue;
      }
      const float* x = px + row * v;  // dlogits may alias logits: x[j] is read before d[j] is written
      const float l = pse[row], g = pdl[row];
      for (int64_t j = 0; j < v; ++j) d[j] = g * std::exp(x[j] - l);
      d[t] -= g;
    }
  });
  return absl::OkStatus();
}

}  // namespace tessera::cpu
