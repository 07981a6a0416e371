// Routing on the host for the routers the backend's RouterForward (softmax top-k) does not cover:
// sigmoid scoring with a selection bias and group-limited top-k (DeepSeek-V3 / dots1, config.h), as
// transformers' DeepseekV3TopkRouter computes it:
//   s = sigmoid(logits); c = s + bias
//   group g's score = sum of the two largest c in the group; keep the topk_group best groups
//   chosen = the top_k largest c among the kept groups (descending; ties: lower expert first)
//   w_j = s[chosen_j], divided by (sum_j w_j + 1e-20) when norm_topk_prob
// (routed_scaling_factor is applied to the experts' outputs by the model). With softmax scoring and
// groups (n_group > 1), s = softmax(logits) and a group's score is its largest c.
// The backward maps d w (the gate weights' gradients) to d logits; the selection is piecewise constant.
// N x E values per layer cross to the host and back: one read-back per layer, which the host-planned MoE
// makes anyway.
#pragma once

#include <cstdint>
#include <vector>

#include "core/model/config.h"

namespace tessera {

struct HostRouting {
  std::vector<int32_t> idx;   // [N, k] chosen experts
  std::vector<float> w;       // [N, k] gate weights
  std::vector<float> scores;  // [N, E] s (sigmoid or softmax)
  std::vector<float> probs;   // [N, E] s normalized per token (routing statistics' entropy)
};

// logits: [N, E] row-major; bias: [E] or empty.
HostRouting RouteOnHost(const ModelConfig& config, const std::vector<float>& logits, const std::vector<float>& bias,
                        int64_t n);
// dw: [N, k] -> d logits [N, E].
std::vector<float> HostRouterBackward(const ModelConfig& config, const HostRouting& r, const std::vector<float>& dw,
                                      int64_t n);

}  // namespace tessera
