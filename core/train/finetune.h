// Expert-only fine-tuning end to end: selection -> a fresh overlay -> Trainer -> artifact.
//
// This is what a fine-tuning job runs. The new overlay holds
//   - the trained slots: copies of `base_version`'s weights where it has the slot, else of the
//     backbone's base experts;
//   - every other slot of `base_version`, carried unchanged (so the new version keeps what the
//     tenant trained before).
// The backbone (`model`) and `base_version` are never written: the overlay is made of fresh copies.
// Auto selection measures routing with `base_version` applied (the router is frozen either way, but
// this keeps the measurement on the model the tenant actually runs).
// Checkpoints: with checkpoint_path set, the training state is saved every checkpoint_every steps
// (and on cancellation), and an existing checkpoint there is resumed from (one made with other
// options or data is refused: FAILED_PRECONDITION). It is left in place on success; the caller deletes
// it once the artifact is published.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/model.h"
#include "core/train/expert_selection.h"
#include "core/train/trainer.h"

namespace tessera::train {

struct FineTuneOptions {
  TrainerOptions trainer;
  bool auto_select = true;
  SelectionOptions selection;          // auto
  std::vector<SlotId> explicit_slots;  // !auto_select
  std::string checkpoint_path;         // empty: no checkpoints
  int64_t checkpoint_every = 0;        // steps; 0: only on cancellation
};

struct FineTuneResult {
  std::vector<SlotId> trained_slots;
  ExpertSelection selection;  // scores (auto only)
  std::shared_ptr<const ExpertOverlay> overlay;  // trained + carried slots
  TrainResult train;
  std::vector<double> losses;
  int64_t trainable_parameters = 0;
  int64_t optimizer_state_bytes = 0;
  std::string artifact;  // SerializeExpertArtifact(overlay, ...)
};

absl::StatusOr<FineTuneResult> FineTuneExperts(
    const Model& model, const std::string& backbone_sha256,
    std::vector<data::TokenizedExample> train, std::vector<data::TokenizedExample> validation,
    const FineTuneOptions& options, std::shared_ptr<const ExpertOverlay> base_version = nullptr,
    const RunControls& controls = {});

// Runs `trainer` to the end under `controls`, with options' checkpoints: restores checkpoint_path when
// it exists, saves it every checkpoint_every steps and on cancellation (so a cancelled or killed job
// resumes where it stopped). Shared by FineTuneExperts and FineTuneLora.
absl::StatusOr<TrainResult> RunWithCheckpoints(Trainer& trainer, const FineTuneOptions& options,
                                               const RunControls& controls);

// The overlay a fine-tune starts from (see the file comment); exposed for tests and tools.
absl::StatusOr<std::shared_ptr<const ExpertOverlay>> MakeTrainingOverlay(
    const Model& model, const std::vector<SlotId>& trained, const ExpertOverlay* base_version);

}  // namespace tessera::train
