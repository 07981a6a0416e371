// How one layer's top-k assignments are grouped by the weight they use, in two forms:
//
//  - MoePlan (host-planned): the router's top-k is copied to the host, every (token t, choice j)
//    assignment is mapped to the weight of slot (layer, e = topk_idx[t, j]) from the token's sequence
//    overlay when the overlay holds that slot, else the base expert. Assignments are stably sorted by
//    (expert, overlay rank) — overlay rank 0 = base, then overlays in order of first appearance in the
//    batch — so each distinct weight is one contiguous row range (one GemmGroup) and each token's
//    assignments stay in expert order whatever else is in the batch. Backward needs this form.
//
//  - MoeDeviceTables (device-routed): the same mapping as tables the device reads, built before the
//    forward from the batch alone (no routing result needed): each token's overlay rank, and per layer
//    the weight set id of every (rank, expert). Set ids enumerate the distinct weights in the same
//    (expert, overlay rank) order, so Backend::MoeSortAssignments on the device produces exactly the
//    MoePlan's order and groups, without copying the top-k to the host.
#pragma once

#include <array>
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
  Tensor token_idx;  // [M] i32 on the backend (= token); set by UploadMoePlan
  Tensor gate_w;     // [M] f32 on the backend (= weight); set by UploadMoePlan

  // GemmGroups over the plan's rows for part 0 (gate), 1 (up) or 2 (down).
  std::vector<GemmGroup> GemmGroups(int part) const;
};

// topk_idx/topk_w: the router's host copies ([N * k]); token_overlay: [N] each token's overlay. The plan
// is made on the host, then its token_idx and gate_w are uploaded to `backend` in one transfer.
absl::StatusOr<MoePlan> BuildMoePlan(int64_t layer, int64_t num_experts, int64_t k, const ModelWeights& base,
                                     absl::Span<const int32_t> topk_idx, absl::Span<const float> topk_w,
                                     absl::Span<const ExpertOverlay* const> token_overlay, Backend* backend);

struct MoeDeviceTables {
  int64_t ranks = 0;                   // R: 1 (base) + distinct overlays in the batch
  Tensor token_rank;                   // [N] i32 on the backend: each token's overlay rank
  std::vector<int32_t> token_rank_host;  // the same on the host
  struct Layer {
    Tensor weight_table;                             // [R, E] i32 on the backend: set id of (rank, expert)
    std::vector<int32_t> weight_table_host;          // the same on the host
    std::vector<uint8_t> set_is_overlay;             // [W]: 1 for an overlay's slot, 0 for a base expert
    std::array<std::vector<const Tensor*>, 3> part;  // per part (gate, up, down): the W sets' weights
  };
  std::vector<Layer> layers;
};

// One upload for every layer's table and the token ranks. The tables point into `base` and the overlays,
// which must outlive them.
absl::StatusOr<MoeDeviceTables> BuildMoeDeviceTables(int64_t num_layers, int64_t num_experts, const ModelWeights& base,
                                                     absl::Span<const ExpertOverlay* const> token_overlay,
                                                     Backend* backend);

}  // namespace tessera
