// Expert selection for expert-specialized fine-tuning (ESFT-style).
//
// Auto: run a bounded sample of the tenant's tokens through the frozen model (with the tenant's
// current overlay, if any, since the router is frozen either way) and collect routing statistics over
// N tokens. For each slot (layer l, expert e), with g_t(e) the token's (post-renormalization) gate
// weight of e (0 when e is not in its top-k) and k the router's top-k:
//   gate_average[l][e] = sum_t g_t(e) / N                      ESFT-Gate's relevance (average gate
//                                                              weight; sums to 1 per layer when the
//                                                              top-k weights are renormalized)
//   gate_share[l][e]   = sum_t g_t(e) / sum over experts of sum_t g_t
//   token_share[l][e]  = tokens routed to e / (N * k)           ESFT-Token's relevance (the share of
//                                                              tokens routed to e divided by top-k;
//                                                              sums to 1 per layer)
//   mixed[l][e]        = (gate_share + token_share) / 2        (sums to 1 per layer)
// The score used (SelectionOptions::score) is one of gate_average (kGate), token_share (kToken) or
// mixed (kMixed, the default). Per layer, sort by score (ties: lower expert first) and take the fewest
// slots whose cumulative score reaches `threshold` (p in (0, 1]; ESFT used p = 0.1 for Gate and 0.2
// for Token, DefaultThreshold); then, if more than `max_experts` slots were taken, keep the
// `max_experts` highest-scoring ones overall. The result is sorted by (layer, expert). Layers without
// routed experts (dense layers) contribute nothing.
// Explicit: validate a given list (in range, no duplicates; INVALID_ARGUMENT naming the slot).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/data/tokenized_example.h"
#include "core/model/model.h"

namespace tessera::train {

// Which relevance score ranks a layer's experts (see the file comment).
enum class RelevanceScore { kMixed, kGate, kToken };

// "mixed", "gate", "token".
std::string_view RelevanceScoreName(RelevanceScore score);
// Inverse of RelevanceScoreName; INVALID_ARGUMENT naming the accepted values.
absl::StatusOr<RelevanceScore> ParseRelevanceScore(std::string_view name);
// ESFT's p for its scores (Gate 0.1, Token 0.2); 0.5 for the mixed score.
double DefaultThreshold(RelevanceScore score);

struct SelectionOptions {
  RelevanceScore score = RelevanceScore::kMixed;
  double threshold = 0.5;      // p: cumulative per-layer relevance to reach
  int64_t max_experts = 0;     // cap on the total; <= 0: no cap
  int64_t max_tokens = 16384;  // token sample bound (examples are taken in order until reached)
  int64_t batch_size = 32;     // sequences per forward
};

struct SlotScore {
  SlotId slot;
  double gate_share = 0.0;
  double token_share = 0.0;   // ESFT-Token's score
  double gate_average = 0.0;  // ESFT-Gate's score
  double score = 0.0;         // the score selection used (SelectionOptions::score)
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
