// The result of an expert fine-tune: a safetensors blob holding the overlay's slots under their HF
// expert names (so merging it into the backbone gives a plain HF checkpoint), with "__metadata__":
//   format          "tessera-expert-overlay-v1"
//   slots           every slot in the blob, "L0.E3,L2.E11" (sorted)
//   trained_slots   the slots this run trained (the others were carried from the base version)
//   backbone_sha256 the backbone's weights file digest
//   steps, seed     of the run
//   metrics         a JSON object of named numbers (e.g. {"val_loss":0.12,"train_loss":0.1})
//   + any `extra` entries.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/overlay.h"

namespace tessera::train {

struct ArtifactInfo {
  std::vector<SlotId> trained_slots;
  std::string backbone_sha256;
  int64_t steps = 0;
  uint64_t seed = 0;
  std::map<std::string, double> metrics;
  std::map<std::string, std::string> extra;
};

absl::StatusOr<std::string> SerializeExpertArtifact(const ExpertOverlay& overlay,
                                                    const ArtifactInfo& info);

std::string SlotListString(const std::vector<SlotId>& slots);  // "L0.E3,L2.E11"
absl::StatusOr<std::vector<SlotId>> ParseSlotList(std::string_view text);  // inverse; "" -> {}

}  // namespace tessera::train
