#include "core/train/finetune.h"

#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "core/train/artifact.h"
#include "core/train/model_trainable.h"
#include "core/util/status_macros.h"

namespace tessera::train {
namespace {

absl::StatusOr<Tensor> DeepCopy(Backend* be, const Tensor& src) {
  ASSIGN_OR_RETURN(Tensor dst, be->Alloc(src.shape(), DType::kF32));
  RETURN_IF_ERROR(be->Copy(src, dst));
  return dst;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const ExpertOverlay>> MakeTrainingOverlay(
    const Model& model, const std::vector<SlotId>& trained, const ExpertOverlay* base_version) {
  Backend* be = model.backend();
  const ModelConfig& c = model.config();
  RETURN_IF_ERROR(ValidateExplicitSlots(c, trained));
  std::map<SlotId, ExpertWeights> slots;
  std::vector<SlotId> from_base;
  for (SlotId s : trained) {
    if (base_version != nullptr && base_version->Has(s)) continue;
    from_base.push_back(s);
  }
  if (!from_base.empty()) {
    ASSIGN_OR_RETURN(auto copies, ExpertOverlay::CopyOfBase(c, model.weights(), from_base, be));
    for (const auto& [s, w] : copies->slots()) slots[s] = w;  // fresh tensors owned via handles
  }
  if (base_version != nullptr) {
    for (const auto& [s, w] : base_version->slots()) {
      ExpertWeights copy;
      ASSIGN_OR_RETURN(copy.gate, DeepCopy(be, w.gate));
      ASSIGN_OR_RETURN(copy.up, DeepCopy(be, w.up));
      ASSIGN_OR_RETURN(copy.down, DeepCopy(be, w.down));
      slots[s] = std::move(copy);
    }
  }
  return ExpertOverlay::FromWeights(c, std::move(slots), be);
}

absl::StatusOr<TrainResult> RunWithCheckpoints(Trainer& trainer, const FineTuneOptions& options,
                                               const RunControls& controls) {
  if (!options.checkpoint_path.empty() && std::filesystem::exists(options.checkpoint_path)) {
    RETURN_IF_ERROR(trainer.RestoreCheckpoint(options.checkpoint_path));
  }
  RunControls rc = controls;
  absl::Status checkpoint_status;
  if (!options.checkpoint_path.empty() && options.checkpoint_every > 0) {
    rc.on_progress = [&](const TrainProgress& p) {
      if (p.step % options.checkpoint_every == 0 && p.step < p.max_steps && checkpoint_status.ok()) {
        checkpoint_status = trainer.SaveCheckpoint(options.checkpoint_path);
      }
      if (controls.on_progress) controls.on_progress(p);
    };
  }
  auto run = trainer.Run(rc);
  if (!run.ok()) {
    if (absl::IsCancelled(run.status()) && !options.checkpoint_path.empty()) {
      RETURN_IF_ERROR(trainer.SaveCheckpoint(options.checkpoint_path));
    }
    return run.status();
  }
  RETURN_IF_ERROR(checkpoint_status);
  return *run;
}

absl::StatusOr<FineTuneResult> FineTuneExperts(const Model& model, const std::string& backbone_sha256,
                                               std::vector<data::TokenizedExample> train,
                                               std::vector<data::TokenizedExample> validation,
                                               const FineTuneOptions& options,
                                               std::shared_ptr<const ExpertOverlay> base_version,
                                               const RunControls& controls) {
  FineTuneResult result;
  if (options.auto_select) {
    ASSIGN_OR_RETURN(result.selection,
                     SelectExpertsAuto(model, train, options.selection, base_version.get()));
    result.trained_slots = result.selection.slots;
  } else {
    RETURN_IF_ERROR(ValidateExplicitSlots(model.config(), options.explicit_slots));
    result.trained_slots = options.explicit_slots;
    std::sort(result.trained_slots.begin(), result.trained_slots.end());
  }
  if (result.trained_slots.empty()) {
    return absl::FailedPreconditionError("expert selection chose no slots");
  }
  ASSIGN_OR_RETURN(auto overlay, MakeTrainingOverlay(model, result.trained_slots, base_version.get()));
  ASSIGN_OR_RETURN(auto trainable, ModelTrainable::ForExperts(&model, overlay, result.trained_slots));
  ASSIGN_OR_RETURN(auto trainer, Trainer::Create(trainable.get(), std::move(train),
                                                 std::move(validation), options.trainer));
  ASSIGN_OR_RETURN(const TrainResult run, RunWithCheckpoints(*trainer, options, controls));
  result.train = run;
  result.losses = trainer->losses();
  result.trainable_parameters = trainer->trainable_parameters();
  result.optimizer_state_bytes = trainer->optimizer_state_bytes();
  ArtifactInfo info;
  info.trained_slots = result.trained_slots;
  info.backbone_sha256 = backbone_sha256;
  info.steps = run.steps;
  info.seed = options.trainer.seed;
  info.metrics = {{"train_loss", run.final_train_loss},
                  {"val_loss", run.final_val_loss},
                  {"initial_val_loss", run.initial_val_loss}};
  ASSIGN_OR_RETURN(result.artifact, SerializeExpertArtifact(*overlay, info));
  result.overlay = std::move(overlay);
  return result;
}

}  // namespace tessera::train
