#include "core/train/artifact.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace tessera::train {

std::string SlotListString(const std::vector<SlotId>& slots) {
  std::vector<SlotId> sorted = slots;
  std::sort(sorted.begin(), sorted.end());
  std::string out;
  for (size_t i = 0; i < sorted.size(); ++i) absl::StrAppend(&out, i ? "," : "", sorted[i].ToString());
  return out;
}

absl::StatusOr<std::vector<SlotId>> ParseSlotList(std::string_view text) {
  std::vector<SlotId> out;
  if (text.empty()) return out;
  for (absl::string_view part : absl::StrSplit(absl::string_view(text.data(), text.size()), ',')) {
    int32_t layer = 0, expert = 0;
    size_t dot = part.find(".E");
    if (part.size() < 4 || part[0] != 'L' || dot == absl::string_view::npos ||
        !absl::SimpleAtoi(part.substr(1, dot - 1), &layer) ||
        !absl::SimpleAtoi(part.substr(dot + 2), &expert)) {
      return absl::InvalidArgumentError(absl::StrCat("bad slot \"", part, "\" (expected L<layer>.E<expert>)"));
    }
    out.push_back({layer, expert});
  }
  return out;
}

absl::StatusOr<std::string> SerializeExpertArtifact(const ExpertOverlay& overlay,
                                                    const ArtifactInfo& info) {
  for (SlotId s : info.trained_slots) {
    if (!overlay.Has(s)) {
      return absl::InvalidArgumentError(absl::StrCat("trained slot ", s.ToString(), " not in the overlay"));
    }
  }
  nlohmann::json metrics = nlohmann::json::object();
  for (const auto& [k, v] : info.metrics) {
    if (std::isfinite(v)) metrics[k] = v;
  }
  std::map<std::string, std::string> meta = info.extra;
  meta["format"] = "tessera-expert-overlay-v1";
  meta["slots"] = SlotListString(overlay.SlotIds());
  meta["trained_slots"] = SlotListString(info.trained_slots);
  meta["backbone_sha256"] = info.backbone_sha256;
  meta["steps"] = absl::StrCat(info.steps);
  meta["seed"] = absl::StrCat(info.seed);
  meta["metrics"] = metrics.dump();
  return overlay.Serialize(meta);
}

}  // namespace tessera::train
