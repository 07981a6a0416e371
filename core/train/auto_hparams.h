// Automatic hyperparameters for expert-only fine-tuning: every field a job leaves unset is chosen
// from the dataset and the model by the rule below (explicit values are kept as given, and the rule
// uses them: e.g. an explicit batch_size sets the steps per epoch).
//
// Inputs: n = training examples, T = training tokens (BOS/EOS included), C = loss tokens per example
// (completion + EOS: what must come out exactly; unknown = 8), the model's hidden size H, layers L,
// experts per layer E (top-k routing).
//   batch_size     B = clamp(pow2_floor(n / 32), 4, 16)        small data: more, smaller steps
//   epochs         e = 12 * clamp(C / 8, 1, 3)                  a longer completion must be right at
//                                                               more positions: more passes
//   max_steps      S = clamp(ceil(e * n / B), 500, 3000)        at least 500 updates; early stopping
//                                                               (below) ends it sooner
//   learning_rate  lr = 3e-3 * sqrt(B / 16) * min(1, sqrt(192 / H))   (192 = builtin:tiny's H)
//   warmup_steps   W = ceil(S / 20)
//   relevance_threshold (the per-layer coverage target p of the router's score, expert_selection.h)
//                  p = clamp(0.4 + 0.1 * log2(T / 16384), 0.4, 0.9)   grows with the data
//   max_experts    M = clamp(ceil(p * L * E / 2), L, L * E)     a byte budget that grows with p
//   eval_every     V = clamp(ceil(S / 25), 10, 100)
//   early_stopping_patience  5 validations without a new best (min delta 0.1% of the best)
// The constants were derived with ops/bench/bench_finetune on the task suite (core/data/tasks.h)
// without its held-out tasks (ops/bench/RESULTS.md, "auto hyperparameters"): the old defaults
// (lr 1e-3, 200 steps, batch 8, p 0.5 capped at 4 slots) left most tasks near 0% exact match. The
// completion-length term came from lexicon (C ~ 15: 0.845 at 12 epochs) and from record_json (C ~ 26,
// then held out: 0.285, still improving at 12 epochs), so newer held-out tasks check it.
// The base rate was 1e-2 until the general-ability measurements (RESULTS.md, "The service's default
// learning rate"): at 3e-3 every task of the suite still reaches >= 0.875 exact match (>= 0.8 is the
// bar), small datasets learn as well, and the pretraining mixture's loss rises 4-16x less (cipher +327%
// -> +74%, classify +654% -> +131%, facts +377% -> +24% at the rule's own expert budget).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tessera::train {

// The learning rate at batch 16 on builtin:tiny's width (see the rule above).
inline constexpr double kAutoBaseLearningRate = 3e-3;

struct AutoDataStats {
  int64_t examples = 0;
  int64_t tokens = 0;
  int64_t loss_tokens = 0;  // tokens the loss is on (completions + EOS); 0: unknown
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
  double epochs = 0;             // e (what max_steps was sized for, when auto)
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
