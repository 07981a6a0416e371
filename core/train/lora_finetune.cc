// FineTuneLora (see lora_finetune.h).
#include "core/train/lora_finetune.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace tessera::train {

absl::StatusOr<std::string> SerializeLoraArtifact(const ModelConfig& config, const LoraAdapter& adapter,
                                                  const ArtifactInfo& info) {
  for (SlotId s : info.trained_slots) {
    if (adapter.factors.count(s) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("trained slot ", s.ToString(), " has no LoRA factors"));
    }
  }
  nlohmann::json metrics = nlohmann::json::object();
  for (const auto& [k, v] : info.metrics) {
    if (std::isfinite(v)) metrics[k] = v;
  }
  std::map<std::string, std::string> meta = info.extra;
  meta["slots"] = SlotListString(adapter.SlotIds());
  meta["trained_slots"] = SlotListString(info.trained_slots);
  meta["backbone_sha256"] = info.backbone_sha256;
  meta["steps"] = absl::StrCat(info.steps);
  meta["seed"] = absl::StrCat(info.seed);
  meta["metrics"] = metrics.dump();
  meta["method"] = "lora";
  return adapter.Serialize(config, meta);  // adds format, lora_rank, lora_alpha
}

absl::StatusOr<LoraFineTuneResult> FineTuneLora(const Model& model, const std::string& backbone_sha256,
                                                std::vector<data::TokenizedExample> train,
                                                std::vector<data::TokenizedExample> validation,
                                                const FineTuneOptions& options, const LoraOptions& lora,
                                                const LoraAdapter& start, const RunControls& controls) {
  LoraFineTuneResult out;
  FineTuneResult& result = out.result;
  std::shared_ptr<const ExpertOverlay> start_overlay;
  if (!start.SlotIds().empty()) {
    ASSIGN_OR_RETURN(start_overlay, MergeLoraAdapter(model.config(), start, model.weights(), model.backend(), "",
                                                     model.weights().matrix_dtype()));
  }
  if (options.auto_select) {
    ASSIGN_OR_RETURN(result.selection, SelectExpertsAuto(model, train, options.selection, start_overlay.get()));
    result.trained_slots = result.selection.slots;
  } else {
    RETURN_IF_ERROR(ValidateExplicitSlots(model.config(), options.explicit_slots));
    result.trained_slots = options.explicit_slots;
    std::sort(result.trained_slots.begin(), result.trained_slots.end());
  }
  if (result.trained_slots.empty()) return absl::FailedPreconditionError("expert selection chose no slots");
  ASSIGN_OR_RETURN(auto trainable, LoraTrainable::Create(&model, start, result.trained_slots, lora));
  ASSIGN_OR_RETURN(auto trainer,
                   Trainer::Create(trainable.get(), std::move(train), std::move(validation), options.trainer));
  ASSIGN_OR_RETURN(const TrainResult run, RunWithCheckpoints(*trainer, options, controls));
  result.train = run;
  result.losses = trainer->losses();
  result.trainable_parameters = trainer->trainable_parameters();
  result.optimizer_state_bytes = trainer->optimizer_state_bytes();
  ASSIGN_OR_RETURN(result.overlay, trainable->MergedOverlay());
  ASSIGN_OR_RETURN(out.adapter, trainable->Adapter());
  ArtifactInfo info;
  info.trained_slots = result.trained_slots;
  info.backbone_sha256 = backbone_sha256;
  info.steps = run.steps;
  info.seed = options.trainer.seed;
  info.metrics = {{"train_loss", run.final_train_loss},
                  {"val_loss", run.final_val_loss},
                  {"initial_val_loss", run.initial_val_loss}};
  ASSIGN_OR_RETURN(result.artifact, SerializeLoraArtifact(model.config(), out.adapter, info));
  return out;
}

}  // namespace tessera::train
