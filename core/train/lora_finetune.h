// LoRA fine-tuning end to end (method "lora"): selection -> LoraTrainable -> Trainer -> LoRA artifact.
// The same code runs a service job (services/train_runner.cc) and the methods benchmark
// (ops/bench/bench_finetune): FineTuneLora is FineTuneExperts (finetune.h) with LoRA factors on the
// selected slots instead of the slots' full weights.
//
// Starting point: `start` (LoraAdapter: the tenant's previous version; empty = the base experts). Auto
// selection measures routing with start's merged overlay applied. Checkpoints as FineTuneExperts
// (options.checkpoint_path / checkpoint_every; the trainer's state is A, B and their AdamW moments).
//
// Artifact (SerializeLoraArtifact): the adapter's stored form (lora_overlay.h) with the metadata of an
// expert artifact (artifact.h: slots, trained_slots, backbone_sha256, steps, seed, metrics, extra) and
// format "tessera-lora-v1", lora_rank, lora_alpha.
#pragma once

#include <string>
#include <vector>

#include "core/model/lora_overlay.h"
#include "core/train/artifact.h"
#include "core/train/finetune.h"
#include "core/train/lora_trainable.h"

namespace tessera::train {

struct LoraFineTuneResult {
  FineTuneResult result;  // overlay = the merged version (what it serves), artifact = the LoRA blob
  LoraAdapter adapter;    // the version's content
};

absl::StatusOr<LoraFineTuneResult> FineTuneLora(const Model& model, const std::string& backbone_sha256,
                                                std::vector<data::TokenizedExample> train,
                                                std::vector<data::TokenizedExample> validation,
                                                const FineTuneOptions& options, const LoraOptions& lora,
                                                const LoraAdapter& start = {}, const RunControls& controls = {});

absl::StatusOr<std::string> SerializeLoraArtifact(const ModelConfig& config, const LoraAdapter& adapter,
                                                  const ArtifactInfo& info);

}  // namespace tessera::train
