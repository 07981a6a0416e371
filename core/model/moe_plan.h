// MoePlan: how one layer's top-k assignments are grouped by the weight they use.
//
// Every (token t, choice j) assignment uses the weights of slot (layer, e = topk_idx[t, j]) from the
// token's sequence overlay when the overlay holds that slot, else the base expert. Assignments are
// stably sorted by (expert, overlay rank) — overlay rank 0 = base, then overlays in order of first
// appearance in the batch — so each distinct weight is one contiguous row range (one GemmGroup) and
// each token's assignments stay in expert order whatever else is in the batch.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/backend/backend.h"
#include "core/model/overlay.h"
#include "core/model/weights.h"

namespace tessera {

struct MoeGroup {
  int64_t row_begin = 0;
  int64_t rows = 0;
  int32_t expert = 0;
  const ExpertOverlay* overlay = nullptr;  // nullptr: base weights
  const ExpertWeights* weights = nullptr;
};

struct MoePlan {
  std::vector<int32_t> token;   // [M] token row of each sorted assignment
  std::vector<float> weight;    // [M] its gate weight
  std::vector<int32_t> source;  // [M] its index t * k + j in the router's [N, k] outputs
  std::vector<MoeGroup> groups;
  Tensor token_idx;  // [M] i32 on the backend (= token)
  Tensor gate_w;     // [M] f32 on the backend (= weight)

  // GemmGroups over the plan's rows for part 0 (gate), 1 (up) or 2 (down).
  std::vector<GemmGroup> GemmGroups(int part) const;
};

// topk_idx/topk_w: the router's host copies ([N * k]); token_overlay: [N] each token's overlay.
absl::StatusOr<MoePlan> BuildMoePlan(int64_t layer, int64_t num_experts, int64_t k, const ModelWeights& base,
                                     absl::Span<const int32_t> topk_idx, absl::Span<const float> topk_w,
                                     absl::Span<const ExpertOverlay* const> token_overlay, Backend* backend);

}  // namespace tessera
