// CPU MoE router: softmax over experts, top-k selection, optional renormalization, and its backward.
//
// Forward, per row n of logits [N,E]:
//   probs = softmax(logits) (max-subtracted);
//   topk_idx = the k largest probs, in descending order, ties broken by the lower expert index
//     (selection by repeated strict-max scans: O(E*k), fine for the small k of MoE routers);
//   topk_w = those probs, divided by their sum when `normalize`.
// Backward, from g = d topk_w [N,k]:
//   normalize:  S = sum_j p[idx_j];  dp[idx_j] = (g_j - sum_l g_l * w_l) / S   (w = p[idx]/S)
//   otherwise:  dp[idx_j] = g_j;     dp = 0 on unselected experts
//   dlogits = p * (dp - sum_e p_e dp_e)                                       (softmax backward)
// S is recomputed from probs (not from topk_w), so it is exact even if the caller rounded topk_w.
// Memory: logits/probs/dlogits [N,E] f32, topk_idx [N,k] i32, topk_w/dtopk_w [N,k] f32. Rows are
// independent and parallelized.
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/backend/cpu/cpu_backend_internal.h"
#include "core/backend/cpu/cpu_check.h"
#include "core/backend/cpu/cpu_kernels.h"
#include "core/util/parallel.h"
#include "core/util/status_macros.h"

namespace tessera::cpu {

absl::Status CpuBackend::RouterForward(const Tensor& logits, int k, bool normalize, Tensor& probs,
                                       Tensor& topk_idx, Tensor& topk_w) {
  constexpr char kOp[] = "RouterForward";
  RETURN_IF_ERROR(CheckF32(kOp, "logits", logits));
  RETURN_IF_ERROR(CheckF32(kOp, "probs", probs));
  RETURN_IF_ERROR(CheckI32(kOp, "topk_idx", topk_idx));
  RETURN_IF_ERROR(CheckF32(kOp, "topk_w", topk_w));
  RETURN_IF_ERROR(CheckMatrix(kOp, "logits", logits, -1, -1));
  const int64_t n = Rows(logits), e = Cols(logits);
  if (k < 1 || k > e) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": k = ", k, " must be in [1, ", e, "]"));
  }
  RETURN_IF_ERROR(CheckMatrix(kOp, "probs", probs, n, e));
  RETURN_IF_ERROR(CheckMatrix(kOp, "topk_idx", topk_idx, n, k));
  RETURN_IF_ERROR(CheckMatrix(kOp, "topk_w", topk_w, n, k));
  const float* pl = logits.data<float>();
  float* pp = probs.data<float>();
  int32_t* pi = topk_idx.data<int32_t>();
  float* pw = topk_w.data<float>();
  ParallelFor(n, GrainFor(e * (k + 4)), [&](int64_t s, int64_t end) {
    std::vector<char> taken(e);
    for (int64_t row = s; row < end; ++row) {
      const float* lr = pl + row * e;
      float* pr = pp + row * e;
      const float m = MaxOf(lr, e);
      float sum = 0.0f;
      for (int64_t j = 0; j < e; ++j) {
        pr[j] = std::exp(lr[j] - m);
        sum += pr[j];
      }
      const float inv = 1.0f / sum;
      for (int64_t j = 0; j < e; ++j) pr[j] *= inv;
      std::fill(taken.begin(), taken.end(), 0);
      float wsum = 0.0f;
      for (int t = 0; t < k; ++t) {
        int64_t best = -1;
        for (int64_t j = 0; j < e; ++j) {
          if (!taken[j] && (best < 0 || pr[j] > pr[best])) best = j;
        }
        taken[best] = 1;
        pi[row * k + t] = static_cast<int32_t>(best);
        pw[row * k + t] = pr[best];
        wsum += pr[best];
      }
      if (normalize) {
        for (int t = 0; t < k; ++t) pw[row * k + t] /= wsum;
      }
    }
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::RouterBackward(const Tensor& probs, const Tensor& topk_idx, const Tensor& topk_w,
                                        bool normalize, const Tensor& dtopk_w, Tensor& dlogits) {
  constexpr char kOp[] = "RouterBackward";
  RETURN_IF_ERROR(CheckF32(kOp, "probs", probs));
  RETURN_IF_ERROR(CheckI32(kOp, "topk_idx", topk_idx));
  RETURN_IF_ERROR(CheckF32(kOp, "topk_w", topk_w));
  RETURN_IF_ERROR(CheckF32(kOp, "dtopk_w", dtopk_w));
  RETURN_IF_ERROR(CheckF32(kOp, "dlogits", dlogits));
  RETURN_IF_ERROR(CheckMatrix(kOp, "probs", probs, -1, -1));
  const int64_t n = Rows(probs), e = Cols(probs);
  RETURN_IF_ERROR(CheckMatrix(kOp, "topk_idx", topk_idx, n, -1));
  const int64_t k = Cols(topk_idx);
  RETURN_IF_ERROR(CheckMatrix(kOp, "topk_w", topk_w, n, k));
  RETURN_IF_ERROR(CheckMatrix(kOp, "dtopk_w", dtopk_w, n, k));
  RETURN_IF_ERROR(CheckMatrix(kOp, "dlogits", dlogits, n, e));
  RETURN_IF_ERROR(CheckIndices(kOp, "topk_idx", topk_idx.data<int32_t>(), n * k, e));
  if (Overlaps(probs, dlogits)) return absl::InvalidArgumentError("RouterBackward: dlogits overlaps probs");
  const float* pp = probs.data<float>();
  const int32_t* pi = topk_idx.data<int32_t>();
  const float* pg = dtopk_w.data<float>();
  float* pd = dlogits.data<float>();
  ParallelFor(n, GrainFor(4 * e), [&](int64_t s, int64_t end) {
    for (int64_t row = s; row < end; ++row) {
      const float* pr = pp + row * e;
      const int32_t* ir = pi + row * k;
      const float* gr = pg + row * k;
      float* dr = pd + row * e;
      std::fill_n(dr, e, 0.0f);  // dlogits doubles as the dp buffer
      if (normalize) {
        float sum = 0.0f, gw = 0.0f;
        for (int64_t t = 0; t < k; ++t) sum += pr[ir[t]];
        for (int64_t t = 0; t < k; ++t) gw += gr[t] * pr[ir[t]];
        gw /= sum;
        for (int64_t t = 0; t < k; ++t) dr[ir[t]] += (gr[t] - gw) / sum;
      } else {
        for (int64_t t = 0; t < k; ++t) dr[ir[t]] += gr[t];
      }
      const float dot = Dot(pr, dr, e);
      for (int64_t j = 0; j < e; ++j) dr[j] = pr[j] * (dr[j] - dot);
    }
  });
  return absl::OkStatus();
}

}  // namespace tessera::cpu
