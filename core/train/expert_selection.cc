#include "core/train/expert_selection.h"

#include <algorithm>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/data/rng.h"
#include "core/util/status_macros.h"

namespace tessera::train {

absl::Status ValidateExplicitSlots(const ModelConfig& config, absl::Span<const SlotId> slots) {
  if (slots.empty()) return absl::InvalidArgumentError("explicit expert list is empty");
  std::set<SlotId> seen;
  for (SlotId s : slots) {
    RETURN_IF_ERROR(ValidateSlot(config, s));
    if (!seen.insert(s).second) {
      return absl::InvalidArgumentError(absl::StrCat("slot ", s.ToString(), " listed twice"));
    }
  }
  return absl::OkStatus();
}

std::string_view RelevanceScoreName(RelevanceScore score) {
  switch (score) {
    case RelevanceScore::kMixed: return "mixed";
    case RelevanceScore::kGate: return "gate";
    case RelevanceScore::kToken: return "token";
  }
  return "mixed";
}

absl::StatusOr<RelevanceScore> ParseRelevanceScore(std::string_view name) {
  for (RelevanceScore s : {RelevanceScore::kMixed, RelevanceScore::kGate, RelevanceScore::kToken}) {
    if (name == RelevanceScoreName(s)) return s;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("relevance score '", std::string(name), "' is not one of mixed, gate, token"));
}

double DefaultThreshold(RelevanceScore score) {
  switch (score) {
    case RelevanceScore::kGate: return 0.1;
    case RelevanceScore::kToken: return 0.2;
    case RelevanceScore::kMixed: break;
  }
  return 0.5;
}

absl::StatusOr<ExpertSelection> SelectFromRouting(const RoutingStats& stats,
                                                  const SelectionOptions& options) {
  if (!(options.threshold > 0.0 && options.threshold <= 1.0)) {
    return absl::InvalidArgumentError("relevance threshold must be in (0, 1]");
  }
  if (stats.tokens <= 0) return absl::InvalidArgumentError("no tokens to measure expert usage on");
  const int64_t L = stats.num_layers, E = stats.num_experts;
  if (L < 0 || E < 0 || static_cast<int64_t>(stats.tokens_routed.size()) != L * E ||
      static_cast<int64_t>(stats.gate_weight_sum.size()) != L * E) {
    return absl::InvalidArgumentError(absl::StrCat("routing statistics are not ", L, " layers x ", E,
                                                   " experts"));
  }
  ExpertSelection sel;
  sel.tokens = stats.tokens;
  for (int64_t l = 0; l < L; ++l) {
    double gate_total = 0.0, token_total = 0.0;
    for (int64_t e = 0; e < E; ++e) {
      gate_total += stats.gate_weight_sum[l * E + e];
      token_total += static_cast<double>(stats.tokens_routed[l * E + e]);
    }
    std::vector<SlotScore> layer;
    for (int64_t e = 0; e < E; ++e) {
      SlotScore s;
      s.slot = SlotId{static_cast<int32_t>(l), static_cast<int32_t>(e)};
      s.gate_share = gate_total > 0 ? stats.gate_weight_sum[l * E + e] / gate_total : 0.0;
      s.token_share = token_total > 0 ? stats.tokens_routed[l * E + e] / token_total : 0.0;
      s.gate_average = stats.gate_weight_sum[l * E + e] / static_cast<double>(stats.tokens);
      switch (options.score) {
        case RelevanceScore::kMixed: s.score = 0.5 * (s.gate_share + s.token_share); break;
        case RelevanceScore::kGate: s.score = s.gate_average; break;
        case RelevanceScore::kToken: s.score = s.token_share; break;
      }
      layer.push_back(s);
      sel.scores.push_back(s);
    }
    std::stable_sort(layer.begin(), layer.end(),
                     [](const SlotScore& a, const SlotScore& b) { return a.score > b.score; });
    double cum = 0.0;
    for (const SlotScore& s : layer) {
      if (cum >= options.threshold - 1e-12) break;
      if (s.score <= 0.0) break;  // unused experts never help reach the threshold
      sel.slots.push_back(s.slot);
      cum += s.score;
    }
  }
  if (options.max_experts > 0 && static_cast<int64_t>(sel.slots.size()) > options.max_experts) {
    std::vector<SlotScore> chosen;
    for (SlotId s : sel.slots) chosen.push_back(sel.scores[s.layer * E + s.expert]);
    std::stable_sort(chosen.begin(), chosen.end(), [](const SlotScore& a, const SlotScore& b) {
      if (a.score != b.score) return a.score > b.score;
      return a.slot < b.slot;
    });
    chosen.resize(options.max_experts);
    sel.slots.clear();
    for (const SlotScore& s : chosen) sel.slots.push_back(s.slot);
  }
  std::sort(sel.slots.begin(), sel.slots.end());
  return sel;
}

absl::StatusOr<ExpertSelection> SelectExpertsAuto(const Model& model,
                                                  const std::vector<data::TokenizedExample>& examples,
                                                  const SelectionOptions& options,
                                                  const ExpertOverlay* overlay) {
  if (options.max_tokens < 1 || options.batch_size < 1) {
    return absl::InvalidArgumentError("max_tokens and batch_size must be >= 1");
  }
  const ModelConfig& c = model.config();
  RoutingStats total;
  total.Init(c.num_layers, c.num_experts);
  int64_t tokens = 0;
  size_t next = 0;
  while (next < examples.size() && tokens < options.max_tokens) {
    std::vector<SequenceInput> batch;
    for (; next < examples.size() && static_cast<int64_t>(batch.size()) < options.batch_size &&
           tokens < options.max_tokens;
         ++next) {
      const auto& toks = examples[next].tokens;
      const int64_t n = std::min<int64_t>(static_cast<int64_t>(toks.size()), options.max_tokens - tokens);
      if (n <= 0) continue;
      batch.push_back({absl::MakeConstSpan(toks.data(), n), overlay, nullptr});
      tokens += n;
    }
    if (batch.empty()) break;
    ForwardOptions opt;
    opt.logits = LogitsMode::kNone;
    opt.collect_routing = true;
    ASSIGN_OR_RETURN(ForwardResult r, model.Forward(batch, opt));
    for (const RoutingStats& s : r.routing) total.Merge(s);
  }
  return SelectFromRouting(total, options);
}

std::vector<SlotId> RandomSlots(const ModelConfig& config, int64_t count, uint64_t seed) {
  std::vector<SlotId> all;
  for (int32_t l = 0; l < config.num_layers; ++l) {
    if (config.IsDenseLayer(l)) continue;  // no expert slots
    for (int32_t e = 0; e < config.num_experts; ++e) all.push_back({l, e});
  }
  data::Rng rng(data::DeriveSeed(seed, 0x72616e646f6dull));
  rng.Shuffle(all);
  all.resize(std::min<size_t>(all.size(), static_cast<size_t>(std::max<int64_t>(count, 0))));
  std::sort(all.begin(), all.end());
  return all;
}

}  // namespace tessera::train
