// Pretraining of a backbone on the synthetic general corpus (core/data/corpus.h): what the
// `tessera-pretrain` command runs, as a library function so tests and benches can call it.
//
// Data: `num_docs` documents of the general mixture (corpus seed), each one example
// [BOS] doc [EOS] with the loss on every token after BOS (no packing: the model takes variable-length
// batches). Validation: 256 documents from a different corpus seed. All parameters train (AdamW,
// warmup + cosine). `max_seconds` > 0 stops early (between steps) when the time is up; the schedule
// is still the one for max_steps, so pick max_steps to fit the time.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "core/model/config.h"
#include "core/model/weights.h"
#include "core/train/trainer.h"

namespace tessera::train {

struct PretrainOptions {
  ModelConfig config = ModelConfig::BuiltinTiny();
  uint64_t init_seed = 1;
  uint64_t corpus_seed = 2024;
  int64_t num_docs = 200000;
  double max_seconds = 0.0;
  TrainerOptions trainer;  // seq_len, batch_size, max_steps, lr, ...
};

struct PretrainResult {
  ModelWeights weights;
  TrainResult train;
  std::vector<double> losses;
};

PretrainOptions DefaultPretrainOptions();

// Writes `dir`/config.json and `dir`/model.safetensors (HF names; bf16 storage when `bf16`, which
// halves the shipped file; loading widens to f32). Crash-safe writes.
absl::Status SaveBackbone(const ModelConfig& config, ModelWeights& weights, Backend* backend,
                          const std::string& dir, const std::map<std::string, std::string>& metadata,
                          bool bf16);

absl::StatusOr<PretrainResult> Pretrain(const PretrainOptions& options, Backend* backend,
                                        const std::function<void(const TrainProgress&)>& on_progress);

}  // namespace tessera::train
