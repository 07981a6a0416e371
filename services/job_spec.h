// JobSpec: a fine-tuning job's accepted request with every default filled in. It is what the registry
// stores (as JSON, in Job.spec) and what the job runner executes, so a job means the same thing after a
// server restart or an upgrade that changes defaults.
//
// Validation (ValidateAndFill) checks every field against fixed ranges and the backbone's shape and
// returns INVALID_ARGUMENT whose message starts with the field's name as clients spell it, e.g.
// "hyperparameters.seq_len: must be in [8, 512], got 4096".
//
// Auto: max_steps, batch_size, learning_rate, warmup_steps and the auto selection's
// relevance_threshold / max_experts that the request leaves unset are chosen by the rule of
// core/train/auto_hparams.h from the training dataset (examples, tokens, loss tokens, i.e. the
// completion length: JobRequest.training_*; a dataset stored before loss tokens were counted has 0,
// which the rule reads as short completions) and
// the backbone; `auto_fields` names them. Every new job keeps its best validation checkpoint
// (keep_best) and validates every eval_every steps; a plateau of early_stopping_patience validations
// ends it early only when max_steps was chosen by the rule (an explicit max_steps runs to the end).
// max_general_regression (the promotion gate's bound, [0, 10]) is kept unset when the request leaves it
// unset: the scheduler then applies the server's --max-general-regression.
// Specs stored before these fields existed read back with eval_every 0 (max_steps / 5), no early
// stopping and the last step kept, as they ran then.
//
// Method: "" / "esft" trains the selected slots' full weights; "lora" trains rank-r factors on them
// (lora_rank: default kDefaultLoraRank, in [1, min(hidden_size, expert_dim)]; a defaulted rank is
// listed in auto_fields, and a job continuing from a LoRA version then takes that version's rank).
// LoRA's scale alpha / r is kLoraScale (alpha = 2 r). Specs from before methods read back as "esft".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/backbone_info.h"

namespace tessera::services {

struct SlotId {
  int layer = 0;
  int expert = 0;
  bool operator==(const SlotId&) const = default;
  bool operator<(const SlotId& o) const {
    return layer != o.layer ? layer < o.layer : expert < o.expert;
  }
};

// The request as sent (unset optionals take defaults).
struct JobRequest {
  std::string training_dataset_id;
  std::string validation_dataset_id;
  std::optional<int64_t> max_steps;
  std::optional<int64_t> batch_size;
  std::optional<int64_t> seq_len;
  std::optional<double> learning_rate;
  std::optional<int64_t> warmup_steps;
  std::optional<double> weight_decay;
  std::optional<uint64_t> seed;
  enum class Selection { kUnset, kAuto, kExplicit } selection = Selection::kUnset;
  double relevance_threshold = 0;  // auto; 0 = default
  int64_t max_experts = 0;         // auto; 0 = default
  std::vector<SlotId> slots;       // explicit
  std::optional<int64_t> base_version;
  bool auto_promote = false;
  std::optional<double> max_general_regression;  // unset: the server's default (promotion gate)
  std::string idempotency_key;
  std::string method;     // "", "esft" or "lora"
  int64_t lora_rank = 0;  // 0 = default
  // The training dataset's size (from its registry row), for the auto rule.
  int64_t training_examples = 0;
  int64_t training_tokens = 0;
  int64_t training_loss_tokens = 0;  // completions + EOS; 0: unknown
};

inline constexpr int64_t kDefaultLoraRank = 8;
inline constexpr double kLoraScale = 2.0;

struct JobSpec {
  int64_t max_steps = 200;
  int64_t batch_size = 8;
  int64_t seq_len = 128;
  double learning_rate = 1e-3;
  int64_t warmup_steps = 10;
  double weight_decay = 0.0;
  uint64_t seed = 0;
  bool auto_select = true;
  double relevance_threshold = 0.5;
  int64_t max_experts = 4;
  std::vector<SlotId> slots;  // explicit selection
  int64_t base_version = 0;   // resolved (the live version when the request left it unset)
  bool auto_promote = false;
  // The promotion gate's bound on the relative general-ability loss increase; unset: the server's
  // --max-general-regression when the gate decides (JobScheduler::Options).
  std::optional<double> max_general_regression;
  int64_t eval_every = 0;               // 0: max(1, max_steps / 5) (specs from before auto)
  int64_t early_stopping_patience = 0;  // 0: off
  double early_stopping_min_delta = 0;  // relative
  bool keep_best = false;               // the version is the best validation's checkpoint
  std::vector<std::string> auto_fields; // request fields the auto rule chose
  std::string method = "esft";          // "esft" (full slot weights) or "lora" (core/train/lora_trainable.h)
  int64_t lora_rank = 0;                // lora: the rank (auto_fields has "lora_rank" when defaulted); else 0

  std::string ToJson() const;
  static absl::StatusOr<JobSpec> FromJson(const std::string& json);
};

// Checks `request` (datasets' existence and base_version are checked by the caller against the
// registry) and fills defaults. `live_version` is used when base_version is unset.
absl::StatusOr<JobSpec> ValidateAndFill(const JobRequest& request, const BackboneInfo& backbone,
                                        int64_t live_version);

// CreateJobRequest.suffix: "" or at most 64 characters of [A-Za-z0-9_-] (INVALID_ARGUMENT naming the
// field, the limit and the first offending character otherwise).
absl::Status ValidateJobSuffix(std::string_view suffix);

// Slots as stored in the registry (Job.selected_slots, ExpertVersion.slots_json):
// [{"layer":0,"expert":3},...]. Parsing accepts that form and [[0,3],...].
std::string SlotsToJson(const std::vector<SlotId>& slots);
absl::StatusOr<std::vector<SlotId>> SlotsFromJson(const std::string& json);

}  // namespace tessera::services
