// BuildMoePlan (see moe_plan.h).
#include "core/model/moe_plan.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/model/model_internal.h"
#include "core/util/status_macros.h"

namespace tessera {

std::vector<GemmGroup> MoePlan::GemmGroups(int part) const {
  std::vector<GemmGroup> out;
  out.reserve(groups.size());
  for (const MoeGroup& g : groups) {
    const Tensor* w = part == 0 ? &g.weights->gate : part == 1 ? &g.weights->up : &g.weights->down;
    out.push_back({g.row_begin, g.rows, w, nullptr});
  }
  return out;
}

absl::StatusOr<MoePlan> BuildMoePlan(int64_t layer, int64_t num_experts, int64_t k, const ModelWeights& base,
                                     absl::Span<const int32_t> topk_idx, absl::Span<const float> topk_w,
                                     absl::Span<const ExpertOverlay* const> token_overlay, Backend* backend) {
  const int64_t n = static_cast<int64_t>(token_overlay.size());
  const int64_t m = n * k;
  if (static_cast<int64_t>(topk_idx.size()) != m || static_cast<int64_t>(topk_w.size()) != m) {
    return absl::InternalError("BuildMoePlan: top-k arrays do not match the token count");
  }
  // Rank overlays by first appearance so the order is a function of the batch only.
  std::vector<const ExpertOverlay*> distinct;
  std::vector<int32_t> rank_of_token(n, 0);
  for (int64_t t = 0; t < n; ++t) {
    const ExpertOverlay* o = token_overlay[t];
    if (o == nullptr) continue;
    auto it = std::find(distinct.begin(), distinct.end(), o);
    if (it == distinct.end()) {
      distinct.push_back(o);
      it = distinct.end() - 1;
    }
    rank_of_token[t] = static_cast<int32_t>(it - distinct.begin()) + 1;
  }
  // Which (overlay, expert) pairs hold a slot at this layer: distinct.size() x E table.
  std::vector<const ExpertWeights*> overlay_slot(distinct.size() * num_experts, nullptr);
  for (size_t r = 0; r < distinct.size(); ++r) {
    for (const auto& [slot, w] : distinct[r]->slots()) {
      if (slot.layer == layer) overlay_slot[r * num_experts + slot.expert] = &w;
    }
  }
  std::vector<int64_t> key(m);
  for (int64_t a = 0; a < m; ++a) {
    const int32_t e = topk_idx[a];
    if (e < 0 || e >= num_experts) {
      return absl::InternalError(absl::StrCat("router returned expert ", e, " out of range"));
    }
    const int64_t t = a / k;
    int64_t r = rank_of_token[t];
    if (r > 0 && overlay_slot[(r - 1) * num_experts + e] == nullptr) r = 0;
    key[a] = static_cast<int64_t>(e) * (static_cast<int64_t>(distinct.size()) + 1) + r;
  }
  std::vector<int32_t> order(m);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t x, int32_t y) { return key[x] < key[y]; });

  MoePlan plan;
  plan.token.resize(m);
  plan.weight.resize(m);
  plan.source = order;
  for (int64_t i = 0; i < m; ++i) {
    plan.token[i] = static_cast<int32_t>(order[i] / k);
    plan.weight[i] = topk_w[order[i]];
    if (i == 0 || key[order[i]] != key[order[i - 1]]) {
      const int64_t kk = key[order[i]];
      const int32_t e = static_cast<int32_t>(kk / (static_cast<int64_t>(distinct.size()) + 1));
      const int64_t r = kk % (static_cast<int64_t>(distinct.size()) + 1);
      MoeGroup g;
      g.row_begin = i;
      g.expert = e;
      if (r == 0) {
        g.weights = &base.layers[layer].experts[e];
      } else {
        g.overlay = distinct[r - 1];
        g.weights = overlay_slot[(r - 1) * num_experts + e];
      }
      plan.groups.push_back(g);
    }
    plan.groups.back().rows++;
  }
  // One upload for both arrays: a word buffer [token rows | gate weights (f32 bits)] (model_internal.h).
  const int64_t w_at = AlignWords(m);
  std::vector<int32_t> host(static_cast<size_t>(w_at + m), 0);
  std::copy(plan.token.begin(), plan.token.end(), host.begin());
  std::memcpy(host.data() + w_at, plan.weight.data(), static_cast<size_t>(m) * sizeof(float));
  ASSIGN_OR_RETURN(Tensor both, backend->FromHost(host, {w_at + m}));
  plan.token_idx = WordView(both, 0, {m}, DType::kI32);
  plan.gate_w = WordView(both, w_at, {m}, DType::kF32);
  return plan;
}

}  // namespace tessera
