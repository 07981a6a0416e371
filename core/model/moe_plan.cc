// BuildMoePlan and BuildMoeDeviceTables (see moe_plan.h).
#include "core/model/moe_plan.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/model/model_internal.h"
#include "core/util/status_macros.h"

namespace tessera {
namespace {

// The batch's overlays ranked by first appearance (so the order is a function of the batch only):
// rank_of_token[t] = 0 for the base, r >= 1 for distinct[r - 1].
struct OverlayRanks {
  std::vector<const ExpertOverlay*> distinct;
  std::vector<int32_t> rank_of_token;
};

OverlayRanks RankOverlays(absl::Span<const ExpertOverlay* const> token_overlay) {
  OverlayRanks out;
  out.rank_of_token.assign(token_overlay.size(), 0);
  for (size_t t = 0; t < token_overlay.size(); ++t) {
    const ExpertOverlay* o = token_overlay[t];
    if (o == nullptr) continue;
    auto it = std::find(out.distinct.begin(), out.distinct.end(), o);
    if (it == out.distinct.end()) {
      out.distinct.push_back(o);
      it = out.distinct.end() - 1;
    }
    out.rank_of_token[t] = static_cast<int32_t>(it - out.distinct.begin()) + 1;
  }
  return out;
}

// Which (overlay, expert) pairs hold a slot at `layer`: a distinct.size() x E table (nullptr: none).
std::vector<const ExpertWeights*> OverlaySlots(const OverlayRanks& ranks, int64_t layer, int64_t num_experts) {
  std::vector<const ExpertWeights*> slot_of(ranks.distinct.size() * num_experts, nullptr);
  for (size_t r = 0; r < ranks.distinct.size(); ++r) {
    for (const auto& [slot, w] : ranks.distinct[r]->slots()) {
      if (slot.layer == layer) slot_of[r * num_experts + slot.expert] = &w;
    }
  }
  return slot_of;
}

const Tensor* Part(const ExpertWeights& w, int part) { return part == 0 ? &w.gate : part == 1 ? &w.up : &w.down; }

// The plan on the host (token_idx/gate_w undefined).
absl::StatusOr<MoePlan> PlanMoeAssignments(int64_t layer, int64_t num_experts, int64_t k, const ModelWeights& base,
                                           absl::Span<const int32_t> topk_idx, absl::Span<const float> topk_w,
                                           absl::Span<const ExpertOverlay* const> token_overlay) {
  const int64_t n = static_cast<int64_t>(token_overlay.size());
  const int64_t m = n * k;
  if (static_cast<int64_t>(topk_idx.size()) != m || static_cast<int64_t>(topk_w.size()) != m) {
    return absl::InternalError("PlanMoeAssignments: top-k arrays do not match the token count");
  }
  const OverlayRanks ranks = RankOverlays(token_overlay);
  const std::vector<const ExpertWeights*> overlay_slot = OverlaySlots(ranks, layer, num_experts);
  const int64_t stride = static_cast<int64_t>(ranks.distinct.size()) + 1;
  std::vector<int64_t> key(m);
  for (int64_t a = 0; a < m; ++a) {
    const int32_t e = topk_idx[a];
    if (e < 0 || e >= num_experts) {
      return absl::InternalError(absl::StrCat("router returned expert ", e, " out of range"));
    }
    int64_t r = ranks.rank_of_token[a / k];
    if (r > 0 && overlay_slot[(r - 1) * num_experts + e] == nullptr) r = 0;
    key[a] = static_cast<int64_t>(e) * stride + r;
  }
  // Stable counting sort by key (keys are < E * stride, a few thousand at most): O(M), where a comparison
  // sort of a 4096-token training batch (M = 32768) cost ~1 ms of host time per layer, time a GPU waits.
  std::vector<int32_t> order(m);
  std::vector<int64_t> next(static_cast<size_t>(num_experts * stride) + 1, 0);
  for (int64_t a = 0; a < m; ++a) ++next[key[a] + 1];
  for (size_t i = 1; i < next.size(); ++i) next[i] += next[i - 1];
  for (int64_t a = 0; a < m; ++a) order[next[key[a]]++] = static_cast<int32_t>(a);

  MoePlan plan;
  plan.token.resize(m);
  plan.weight.resize(m);
  plan.source = order;
  for (int64_t i = 0; i < m; ++i) {
    plan.token[i] = static_cast<int32_t>(order[i] / k);
    plan.weight[i] = topk_w[order[i]];
    if (i == 0 || key[order[i]] != key[order[i - 1]]) {
      const int64_t kk = key[order[i]];
      const int64_t r = kk % stride;
      MoeGroup g;
      g.row_begin = i;
      g.expert = static_cast<int32_t>(kk / stride);
      if (r == 0) {
        g.weights = &base.layers[layer].experts[g.expert];
      } else {
        g.overlay = ranks.distinct[r - 1];
        g.weights = overlay_slot[(r - 1) * num_experts + g.expert];
      }
      plan.groups.push_back(g);
    }
    plan.groups.back().rows++;
  }
  return plan;
}

}  // namespace

std::vector<GemmGroup> MoePlan::GemmGroups(int part) const {
  std::vector<GemmGroup> out;
  out.reserve(groups.size());
  for (const MoeGroup& g : groups) out.push_back({g.row_begin, g.rows, Part(*g.weights, part), nullptr});
  return out;
}

absl::StatusOr<MoePlan> BuildMoePlan(int64_t layer, int64_t num_experts, int64_t k, const ModelWeights& base,
                                     absl::Span<const int32_t> topk_idx, absl::Span<const float> topk_w,
                                     absl::Span<const ExpertOverlay* const> token_overlay, Backend* backend) {
  ASSIGN_OR_RETURN(MoePlan plan, PlanMoeAssignments(layer, num_experts, k, base, topk_idx, topk_w, token_overlay));
  // One upload for both arrays: a word buffer [token rows | gate weights (f32 bits)] (model_internal.h).
  const int64_t m = static_cast<int64_t>(plan.token.size());
  const int64_t w_at = AlignWords(m);
  std::vector<int32_t> host(static_cast<size_t>(w_at + m), 0);
  std::copy(plan.token.begin(), plan.token.end(), host.begin());
  std::memcpy(host.data() + w_at, plan.weight.data(), static_cast<size_t>(m) * sizeof(float));
  ASSIGN_OR_RETURN(Tensor both, backend->FromHost(host, {w_at + m}));
  plan.token_idx = WordView(both, 0, {m}, DType::kI32);
  plan.gate_w = WordView(both, w_at, {m}, DType::kF32);
  return plan;
}

absl::StatusOr<MoeDeviceTables> BuildMoeDeviceTables(int64_t num_layers, int64_t num_experts, const ModelWeights& base,
                                                     absl::Span<const ExpertOverlay* const> token_overlay,
                                                     Backend* backend) {
  const OverlayRanks ranks = RankOverlays(token_overlay);
  MoeDeviceTables out;
  out.ranks = static_cast<int64_t>(ranks.distinct.size()) + 1;
  const int64_t n = static_cast<int64_t>(token_overlay.size());
  const int64_t table_words = out.ranks * num_experts;
  // Word buffer: [token ranks | layer 0's table | layer 1's table | ...], each part 256-byte aligned.
  const int64_t layer_at = AlignWords(n), layer_stride = AlignWords(table_words);
  std::vector<int32_t> host(static_cast<size_t>(layer_at + num_layers * layer_stride), 0);
  std::copy(ranks.rank_of_token.begin(), ranks.rank_of_token.end(), host.begin());
  out.token_rank_host = ranks.rank_of_token;
  out.layers.resize(num_layers);
  for (int64_t l = 0; l < num_layers; ++l) {
    const std::vector<const ExpertWeights*> overlay_slot = OverlaySlots(ranks, l, num_experts);
    int32_t* table = host.data() + layer_at + l * layer_stride;
    MoeDeviceTables::Layer& layer = out.layers[l];
    if (base.layers[l].experts.empty()) continue;  // a dense layer: no routing, no table
    // Sets in (expert, rank) order, the MoePlan's key order: expert e's base, then its overlay slots.
    for (int64_t e = 0; e < num_experts; ++e) {
      const int32_t base_set = static_cast<int32_t>(layer.part[0].size());
      for (int p = 0; p < 3; ++p) layer.part[p].push_back(Part(base.layers[l].experts[e], p));
      layer.set_is_overlay.push_back(0);
      for (int64_t r = 0; r < out.ranks; ++r) {
        const ExpertWeights* ov = r == 0 ? nullptr : overlay_slot[(r - 1) * num_experts + e];
        if (ov == nullptr) {
          table[r * num_experts + e] = base_set;
          continue;
        }
        table[r * num_experts + e] = static_cast<int32_t>(layer.part[0].size());
        for (int p = 0; p < 3; ++p) layer.part[p].push_back(Part(*ov, p));
        layer.set_is_overlay.push_back(1);
      }
    }
    layer.weight_table_host.assign(table, table + table_words);
  }
  ASSIGN_OR_RETURN(Tensor all, backend->FromHost(host, {static_cast<int64_t>(host.size())}));
  out.token_rank = WordView(all, 0, {n}, DType::kI32);
  for (int64_t l = 0; l < num_layers; ++l) {
    out.layers[l].weight_table = WordView(all, layer_at + l * layer_stride, {out.ranks, num_experts}, DType::kI32);
  }
  return out;
}

}  // namespace tessera
