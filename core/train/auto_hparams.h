// Automatic hyperparameters for expert-only fine-tuning: every field a job leaves unset is chosen
// from the dataset and the model by the rule below (explicit values are kept as given, and the rule
// uses them: e.g. an explicit batch_size sets the steps per epoch).
//
// Inputs: n = training examples, T = training tokens (BOS/EOS included), the model's hidden size H,
// layers L, experts per layer E (top-k routing).
//   batch_size     B = clamp(pow2_floor(n / 32), 4, 16)        small data: more, smaller steps
//   max_steps      S = clamp(ceil(12 * n / B), 500, 2000)       ~12 epochs, at least 500 updates;
//                                                               early stopping (below) ends it sooner
//   learning_rate  lr = 1e-2 * sqrt(B / 16) * min(1, sqrt(192 / H))   (192 = builtin:tiny's H)
//   warmup_steps   W = ceil(S / 20)
//   relevance_threshold (the per-layer coverage target p of the router's score, expert_selection.h)
//                  p = clamp(0.4 + 0.1 * log2(T / 16384), 0.4, 0.9)   grows with the data
//   max_experts    M = clamp(ceil(p * L * E / 2), L, L * E)     a byte budget that grows with p
//   eval_every     V = clamp(ceil(S / 25), 10, 100)
//   early_stopping_patience  5 validations without a new best (min delta 0.1% of the best)
// The constants were derived with ops/bench/bench_finetune on the task suite (core/data/tasks.h)
// without its held-out tasks (ops/bench/RESULTS.md, "auto hyperparameters"): the old defaults
// (lr 1e-3, 200 steps, batch 8, p 0.5 capped at 4 slots) left most tasks near 0% exact match.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tessera::train {

struct AutoDataStats {
  int64_t examples = 0;
  int64_t tokens = 0;
};

struct AutoModelShape {
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_experts = 0;
  int64_t top_k = 0;
};

// Unset = auto.
struct HparamRequest {
  std::optional<int64_t> max_steps;
  std::optional<int64_t> batch_size;
  std::optional<double> learning_rate;
  std::optional<int64_t> warmup_steps;
  std::optional<double> relevance_threshold;
  std::optional<int64_t> max_experts;
};

struct ResolvedHparams {
  int64_t max_steps = 0;
  int64_t batch_size = 0;
  double learning_rate = 0;
  int64_t warmup_steps = 0;
  double relevance_threshold = 0;
  int64_t max_experts = 0;
  int64_t eval_every = 0;
  int64_t early_stopping_patience = 0;
  double early_stopping_min_delta_ratio = 0;  // of the best loss
  std::vector<std::string> auto_fields;       // the request fields the rule chose, in field order
};

// Pure: the same inputs always give the same output. Explicit values are returned unchanged (the
// caller validates their ranges); warmup is capped at max_steps.
ResolvedHparams ResolveHparams(const AutoDataStats& data, const AutoModelShape& model,
                               const HparamRequest& request);

}  // namespace tessera::train
