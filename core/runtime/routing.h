// Per-layer routing summary of one request, as the API reports it (return_routing): for each layer the
// number of the request's tokens the router sent to each expert, which of those experts were served by
// the tenant's overlay, and the router's mean softmax entropy (nats per token).
// Built from the model's RoutingStats (core/model/model.h), which count every token the request ran
// through the model: the prompt and each generated token fed back (the last sampled token is never
// fed, so it has no routing).
#pragma once

#include <cstdint>
#include <vector>

#include "core/model/model.h"

namespace tessera::runtime {

struct LayerRouting {
  int layer = 0;
  std::vector<int64_t> expert_tokens;  // index = expert
  std::vector<int> overlay_experts;    // experts of this layer whose tokens used the overlay, ascending
  double entropy = 0;                  // mean over the request's tokens
};

std::vector<LayerRouting> SummarizeRouting(const RoutingStats& stats);

}  // namespace tessera::runtime
