// SummarizeRouting (see routing.h).
#include "core/runtime/routing.h"

namespace tessera::runtime {

std::vector<LayerRouting> SummarizeRouting(const RoutingStats& stats) {
  std::vector<LayerRouting> out;
  out.reserve(stats.num_layers);
  for (int64_t l = 0; l < stats.num_layers; ++l) {
    LayerRouting lr;
    lr.layer = static_cast<int>(l);
    lr.expert_tokens.resize(stats.num_experts);
    for (int64_t e = 0; e < stats.num_experts; ++e) {
      const int64_t i = l * stats.num_experts + e;
      lr.expert_tokens[e] = stats.tokens_routed[i];
      if (stats.overlay_tokens[i] > 0) lr.overlay_experts.push_back(static_cast<int>(e));
    }
    lr.entropy = stats.tokens > 0 ? stats.entropy_sum[l] / static_cast<double>(stats.tokens) : 0.0;
    out.push_back(std::move(lr));
  }
  return out;
}

}  // namespace tessera::runtime
