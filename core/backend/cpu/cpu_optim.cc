// CPU AdamW (decoupled weight decay), in place on param, m, v (all f32, equal numel):
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   param -= lr * ( (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) + weight_decay * param )
// The bias corrections are computed once in double. Element-wise, parallel over flat chunks; each chunk
// is a plain loop over __restrict pointers (a lambda's captured pointers lose __restrict, and GCC then
// left the loop scalar: one sqrtss and divss per element, 13% of a batch-2 fine-tune step).
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/backend/cpu/cpu_backend_internal.h"
#include "core/backend/cpu/cpu_check.h"
#include "core/util/parallel.h"
#include "core/util/status_macros.h"

namespace tessera::cpu {
namespace {

struct AdamWConstants {
  float b1, b2, lr, eps, wd, inv_bc1, inv_bc2;
};

void AdamWRange(float* __restrict w, const float* __restrict g, float* __restrict pm, float* __restrict pv,
                int64_t n, const AdamWConstants c) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float mi = c.b1 * pm[i] + (1.0f - c.b1) * gi;
    const float vi = c.b2 * pv[i] + (1.0f - c.b2) * gi * gi;
    pm[i] = mi;
    pv[i] = vi;
    w[i] -= c.lr * ((mi * c.inv_bc1) / (std::sqrt(vi * c.inv_bc2) + c.eps) + c.wd * w[i]);
  }
}

}  // namespace

absl::Status CpuBackend::AdamW(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p) {
  constexpr char kOp[] = "AdamW";
  RETURN_IF_ERROR(CheckF32(kOp, "param", param));
  RETURN_IF_ERROR(CheckF32(kOp, "grad", grad));
  RETURN_IF_ERROR(CheckF32(kOp, "m", m));
  RETURN_IF_ERROR(CheckF32(kOp, "v", v));
  RETURN_IF_ERROR(CheckNumel(kOp, "grad", grad, param.numel()));
  RETURN_IF_ERROR(CheckNumel(kOp, "m", m, param.numel()));
  RETURN_IF_ERROR(CheckNumel(kOp, "v", v, param.numel()));
  if (p.step < 1) return absl::InvalidArgumentError(absl::StrCat(kOp, ": step = ", p.step, " must be >= 1"));
  if (!(p.beta1 >= 0.0f && p.beta1 < 1.0f) || !(p.beta2 >= 0.0f && p.beta2 < 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat(kOp, ": beta1 = ", p.beta1, " and beta2 = ", p.beta2, " must be in [0, 1)"));
  }
  const double t = static_cast<double>(p.step);
  const float inv_bc1 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(p.beta1), t)));
  const float inv_bc2 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(p.beta2), t)));
  const AdamWConstants c{p.beta1, p.beta2, p.lr, p.eps, p.weight_decay, inv_bc1, inv_bc2};
  float* w = param.data<float>();
  const float* g = grad.data<float>();
  float* pm = m.data<float>();
  float* pv = v.data<float>();
  ParallelFor(param.numel(), 1 << 14, [&](int64_t s, int64_t e) {
    AdamWRange(w + s, g + s, pm + s, pv + s, e - s, c);
  });
  return absl::OkStatus();
}

}  // namespace tessera::cpu
