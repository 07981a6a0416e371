// Host routing (see host_router.h).
#include "core/model/host_router.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace tessera {

HostRouting RouteOnHost(const ModelConfig& c, const std::vector<float>& logits, const std::vector<float>& bias,
                        int64_t n) {
  const int64_t e_count = c.num_experts, k = c.top_k, groups = c.n_group, per_group = e_count / c.n_group;
  const bool sigmoid = c.router_scoring == ModelConfig::RouterScoring::kSigmoid;
  HostRouting r;
  r.idx.resize(n * k);
  r.w.resize(n * k);
  r.scores.resize(n * e_count);
  r.probs.resize(n * e_count);
  std::vector<float> choice(e_count), group_score(groups);
  std::vector<int64_t> order(std::max(e_count, groups));
  for (int64_t t = 0; t < n; ++t) {
    const float* lg = logits.data() + t * e_count;
    float* s = r.scores.data() + t * e_count;
    if (sigmoid) {
      for (int64_t e = 0; e < e_count; ++e) s[e] = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(lg[e]))));
    } else {
      const float mx = *std::max_element(lg, lg + e_count);
      double sum = 0;
      for (int64_t e = 0; e < e_count; ++e) sum += std::exp(static_cast<double>(lg[e] - mx));
      for (int64_t e = 0; e < e_count; ++e) s[e] = static_cast<float>(std::exp(static_cast<double>(lg[e] - mx)) / sum);
    }
    double total = 0;
    for (int64_t e = 0; e < e_count; ++e) total += s[e];
    for (int64_t e = 0; e < e_count; ++e) r.probs[t * e_count + e] = static_cast<float>(s[e] / total);
    for (int64_t e = 0; e < e_count; ++e) choice[e] = s[e] + (bias.empty() ? 0.0f : bias[e]);
    // Groups: keep the topk_group best (ties: lower group first).
    std::vector<uint8_t> allowed(e_count, 1);
    if (groups > 1) {
      for (int64_t g = 0; g < groups; ++g) {
        std::vector<float> in(choice.begin() + g * per_group, choice.begin() + (g + 1) * per_group);
        std::sort(in.begin(), in.end(), std::greater<float>());
        group_score[g] = sigmoid ? in[0] + in[1] : in[0];
      }
      std::iota(order.begin(), order.begin() + groups, 0);
      std::stable_sort(order.begin(), order.begin() + groups,
                       [&](int64_t a, int64_t b) { return group_score[a] > group_score[b]; });
      std::fill(allowed.begin(), allowed.end(), 0);
      for (int64_t i = 0; i < c.topk_group; ++i) {
        for (int64_t e = order[i] * per_group; e < (order[i] + 1) * per_group; ++e) allowed[e] = 1;
      }
    }
    std::iota(order.begin(), order.begin() + e_count, 0);
    std::stable_sort(order.begin(), order.begin() + e_count, [&](int64_t a, int64_t b) {
      if (allowed[a] != allowed[b]) return allowed[a] > allowed[b];
      return choice[a] > choice[b];
    });
    double sum = 0;
    for (int64_t j = 0; j < k; ++j) {
      r.idx[t * k + j] = static_cast<int32_t>(order[j]);
      r.w[t * k + j] = s[order[j]];
      sum += s[order[j]];
    }
    if (c.norm_topk_prob) {
      const float denom = static_cast<float>(sum) + 1e-20f;
      for (int64_t j = 0; j < k; ++j) r.w[t * k + j] /= denom;
    }
  }
  return r;
}

std::vector<float> HostRouterBackward(const ModelConfig& c, const HostRouting& r, const std::vector<float>& dw,
                                      int64_t n) {
  const int64_t e_count = c.num_experts, k = c.top_k;
  const bool sigmoid = c.router_scoring == ModelConfig::RouterScoring::kSigmoid;
  std::vector<float> dlogits(n * e_count, 0.0f);
  std::vector<double> ds(e_count);
  for (int64_t t = 0; t < n; ++t) {
    const float* s = r.scores.data() + t * e_count;
    std::fill(ds.begin(), ds.end(), 0.0);
    // d s of the chosen experts, through the renormalization.
    double sum = 0, dot = 0;
    for (int64_t j = 0; j < k; ++j) {
      const float sj = s[r.idx[t * k + j]];
      sum += sj;
      dot += static_cast<double>(dw[t * k + j]) * sj;
    }
    const double denom = sum + 1e-20;
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = r.idx[t * k + j];
      ds[e] += c.norm_topk_prob ? dw[t * k + j] / denom - dot / (denom * denom) : dw[t * k + j];
    }
    float* dl = dlogits.data() + t * e_count;
    if (sigmoid) {
      for (int64_t e = 0; e < e_count; ++e) dl[e] = static_cast<float>(ds[e] * s[e] * (1.0 - s[e]));
    } else {  // softmax: dl = s * (ds - <ds, s>)
      double sds = 0;
      for (int64_t e = 0; e < e_count; ++e) sds += ds[e] * s[e];
      for (int64_t e = 0; e < e_count; ++e) dl[e] = static_cast<float>(s[e] * (ds[e] - sds));
    }
  }
  return dlogits;
}

}  // namespace tessera
