// Expert selection for expert-specialized fine-tuning (ESFT-style).
//
// Auto: run a bounded sample of the tenant's tokens through the frozen model (with the tenant's
// current overlay, if any, since the router is frozen either way) and collect routing statistics. For
// each slot (layer l, expert e):
//   gate_share[l][e]  = sum of e's gate weights over tokens / sum of all gate weights in layer l
//   token_share[l][e] = tokens routed to e / sum over experts of tokens routed (= tokens * top_k)
//   score[l][e]       = (gate_share + token_share) / 2      (sums to 1 over each layer's experts)
// Per layer, sort by score (ties: lower expert first) and take the fewest slots whose cumulative
// score reaches `threshold` (p in (0, 1]); then, if more than `max_experts` slots were taken, keep the
// `max_experts` highest-scoring ones overall. The result is sorted by (layer, expert).
// Explicit: validate a given list (in range, no duplicates; INVALID_ARGUMENT naming the slot).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/data/tokenized_example.h"
#include "core/model/model.h"

namespace tessera::train {

struct SelectionOptions {
  double threshold = 0.5;      // p: cumulative per-layer relevance to reach
  int64_t max_experts = 0;     // cap on the total; <= 0: no cap
  int64_t max_tokens = 16384;  // token sample bound (examples are taken in order until reached)
  int64_t batch_size = 32;     // sequences per forward
};

struct SlotScore {
  SlotId slot;
  double gate_share = 0.0;
  double token_share = 0.0;
  double score = 0.0;
};

struct ExpertSelection {
  std::vector<SlotId> slots;      // chosen, sorted
  std::vector<SlotScore> scores;  // every slot, in (layer, expert) order
  int64_t tokens = 0;             // tokens measured
};

absl::StatusOr<ExpertSelection> SelectExpertsAuto(const Model& model,
                                                  const std::vector<data::TokenizedExample>& examples,
                                                  const SelectionOptions& options,
                                                  const ExpertOverlay* overlay = nullptr);

// Selection from already collected statistics (what SelectExpertsAuto does after its forwards).
absl::StatusOr<ExpertSelection> SelectFromRouting(const RoutingStats& stats,
                                                  const SelectionOptions& options);

absl::Status ValidateExplicitSlots(const ModelConfig& config, absl::Span<const SlotId> slots);

// `count` distinct slots drawn uniformly from all layers x experts (the bench's random baseline).
std::vector<SlotId> RandomSlots(const ModelConfig& config, int64_t count, uint64_t seed);

}  // namespace tessera::train
