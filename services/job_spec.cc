#include "services/job_spec.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/train/auto_hparams.h"
#include "nlohmann/json.hpp"

namespace tessera::services {
namespace {

using nlohmann::json;

constexpr int64_t kMaxSteps = 100000;
constexpr int64_t kMaxBatch = 256;
constexpr int64_t kMinSeqLen = 8;
constexpr size_t kMaxIdempotencyKey = 128;
constexpr double kMaxGeneralRegression = 10;  // a 1000% increase: anything beyond is "no bound"

absl::Status RangeError(const std::string& field, const std::string& range, const std::string& got) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": must be in ", range, ", got ", got));
}

}  // namespace

absl::Status ValidateJobSuffix(std::string_view suffix) {
  constexpr size_t kMaxSuffix = 64;
  if (suffix.size() > kMaxSuffix) {
    return absl::InvalidArgumentError(
        absl::StrCat("suffix: at most ", kMaxSuffix, " characters, got ", suffix.size()));
  }
  for (size_t i = 0; i < suffix.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(suffix[i]);
    if (!absl::ascii_isalnum(c) && c != '_' && c != '-') {
      return absl::InvalidArgumentError(absl::StrCat(
          "suffix: only letters, digits, '_' and '-' are allowed, got \"", absl::CHexEscape(absl::string_view(suffix.data() + i, 1)),
          "\" at position ", i));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<JobSpec> ValidateAndFill(const JobRequest& r, const BackboneInfo& backbone,
                                        int64_t live_version) {
  JobSpec s;
  if (r.training_dataset_id.empty()) {
    return absl::InvalidArgumentError("training_dataset_id is required");
  }
  if (r.max_steps) {
    if (*r.max_steps < 1 || *r.max_steps > kMaxSteps) {
      return RangeError("hyperparameters.max_steps", absl::StrCat("[1, ", kMaxSteps, "]"),
                        absl::StrCat(*r.max_steps));
    }
  }
  if (r.batch_size) {
    if (*r.batch_size < 1 || *r.batch_size > kMaxBatch) {
      return RangeError("hyperparameters.batch_size", absl::StrCat("[1, ", kMaxBatch, "]"),
                        absl::StrCat(*r.batch_size));
    }
  }
  if (r.learning_rate) {
    if (!std::isfinite(*r.learning_rate) || *r.learning_rate <= 0 || *r.learning_rate > 1) {
      return RangeError("hyperparameters.learning_rate", "(0, 1]", absl::StrCat(*r.learning_rate));
    }
  }
  const int64_t total_slots = int64_t{backbone.num_layers} * backbone.num_experts;
  const bool auto_selection = r.selection != JobRequest::Selection::kExplicit;
  if (auto_selection && r.relevance_threshold != 0) {
    if (!std::isfinite(r.relevance_threshold) || r.relevance_threshold < 0 || r.relevance_threshold > 1) {
      return RangeError("expert_selection.auto.relevance_threshold", "(0, 1]",
                        absl::StrCat(r.relevance_threshold));
    }
  }
  if (auto_selection && r.max_experts != 0) {
    if (r.max_experts < 1 || r.max_experts > total_slots) {
      return RangeError("expert_selection.auto.max_experts",
                        absl::StrCat("[1, ", total_slots, "] (layers x experts)"), absl::StrCat(r.max_experts));
    }
  }
  // Auto: what the request leaves unset comes from the rule (warmup is range-checked below against
  // the resolved max_steps).
  train::HparamRequest hr;
  hr.max_steps = r.max_steps;
  hr.batch_size = r.batch_size;
  hr.learning_rate = r.learning_rate;
  hr.warmup_steps = r.warmup_steps;
  if (!auto_selection || r.relevance_threshold != 0) hr.relevance_threshold = r.relevance_threshold;
  if (!auto_selection || r.max_experts != 0) hr.max_experts = r.max_experts;
  const train::ResolvedHparams h = train::ResolveHparams(
      {r.training_examples, r.training_tokens, r.training_loss_tokens},
      {backbone.hidden_size, backbone.num_layers, backbone.num_experts, backbone.experts_per_token}, hr);
  s.max_steps = h.max_steps;
  s.batch_size = h.batch_size;
  s.learning_rate = h.learning_rate;
  s.warmup_steps = h.warmup_steps;
  s.auto_fields = h.auto_fields;
  s.eval_every = h.eval_every;
  s.early_stopping_patience = r.max_steps ? 0 : h.early_stopping_patience;
  s.early_stopping_min_delta = h.early_stopping_min_delta_ratio;
  s.keep_best = true;
  int64_t max_seq = backbone.max_seq_len > 0 ? backbone.max_seq_len : 4096;
  s.seq_len = std::min<int64_t>(s.seq_len, max_seq);
  if (r.seq_len) {
    if (*r.seq_len < kMinSeqLen || *r.seq_len > max_seq) {
      return RangeError("hyperparameters.seq_len",
                        absl::StrCat("[", kMinSeqLen, ", ", max_seq, "] (the backbone's context)"),
                        absl::StrCat(*r.seq_len));
    }
    s.seq_len = *r.seq_len;
  }
  if (r.warmup_steps) {
    if (*r.warmup_steps < 0 || *r.warmup_steps > s.max_steps) {
      return RangeError("hyperparameters.warmup_steps", absl::StrCat("[0, max_steps=", s.max_steps, "]"),
                        absl::StrCat(*r.warmup_steps));
    }
    s.warmup_steps = *r.warmup_steps;
  }
  if (r.weight_decay) {
    if (!std::isfinite(*r.weight_decay) || *r.weight_decay < 0 || *r.weight_decay > 1) {
      return RangeError("hyperparameters.weight_decay", "[0, 1]", absl::StrCat(*r.weight_decay));
    }
    s.weight_decay = *r.weight_decay;
  }
  if (r.seed) s.seed = *r.seed;

  if (r.selection == JobRequest::Selection::kExplicit) {
    s.auto_select = false;
    if (r.slots.empty()) {
      return absl::InvalidArgumentError("expert_selection.explicit.slots: at least one slot is required");
    }
    std::set<SlotId> seen;
    for (size_t i = 0; i < r.slots.size(); ++i) {
      const SlotId& slot = r.slots[i];
      std::string field = absl::StrCat("expert_selection.explicit.slots[", i, "]");
      if (slot.layer < 0 || slot.layer >= backbone.num_layers) {
        return RangeError(field + ".layer", absl::StrCat("[0, ", backbone.num_layers - 1, "]"),
                          absl::StrCat(slot.layer));
      }
      if (slot.expert < 0 || slot.expert >= backbone.num_experts) {
        return RangeError(field + ".expert", absl::StrCat("[0, ", backbone.num_experts - 1, "]"),
                          absl::StrCat(slot.expert));
      }
      if (!seen.insert(slot).second) {
        return absl::InvalidArgumentError(absl::StrCat(field, ": duplicate slot (layer ", slot.layer,
                                                       ", expert ", slot.expert, ")"));
      }
    }
    s.slots = r.slots;
    std::sort(s.slots.begin(), s.slots.end());
  } else {
    s.auto_select = true;
    s.relevance_threshold = h.relevance_threshold;
    s.max_experts = h.max_experts;
    s.max_experts = std::min<int64_t>(s.max_experts, std::max<int64_t>(total_slots, 1));
  }
  if (r.base_version) {
    if (*r.base_version < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("base_version: must be >= 0 (0 = the base experts), got ", *r.base_version));
    }
    s.base_version = *r.base_version;
  } else {
    s.base_version = live_version;
  }
  s.auto_promote = r.auto_promote;
  if (r.method.empty() || r.method == "esft") {
    s.method = "esft";
    if (r.lora_rank != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("lora_rank: only with method \"lora\" (method is \"esft\"), got ", r.lora_rank));
    }
  } else if (r.method == "lora") {
    s.method = "lora";
    const int64_t max_rank = backbone.expert_dim > 0 ? std::min(backbone.hidden_size, backbone.expert_dim)
                                                     : backbone.hidden_size;
    if (r.lora_rank == 0) {
      s.lora_rank = std::min<int64_t>(kDefaultLoraRank, std::max<int64_t>(max_rank, 1));
      s.auto_fields.push_back("lora_rank");
    } else if (r.lora_rank < 1 || r.lora_rank > max_rank) {
      return RangeError("lora_rank", absl::StrCat("[1, ", max_rank, "] (min of hidden_size and expert_dim)"),
                        absl::StrCat(r.lora_rank));
    } else {
      s.lora_rank = r.lora_rank;
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("method: must be \"esft\" or \"lora\" (or empty: esft), got \"", r.method, "\""));
  }
  if (r.max_general_regression) {
    if (!std::isfinite(*r.max_general_regression) || *r.max_general_regression < 0 ||
        *r.max_general_regression > kMaxGeneralRegression) {
      return RangeError("max_general_regression", absl::StrCat("[0, ", kMaxGeneralRegression, "]"),
                        absl::StrCat(*r.max_general_regression));
    }
    s.max_general_regression = r.max_general_regression;
  }
  if (r.idempotency_key.size() > kMaxIdempotencyKey) {
    return absl::InvalidArgumentError(
        absl::StrCat("idempotency_key: at most ", kMaxIdempotencyKey, " bytes, got ",
                     r.idempotency_key.size()));
  }
  for (unsigned char c : r.idempotency_key) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(
          "idempotency_key: only printable ASCII characters without spaces are allowed");
    }
  }
  return s;
}

std::string SlotsToJson(const std::vector<SlotId>& slots) {
  json a = json::array();
  for (const SlotId& s : slots) a.push_back({{"layer", s.layer}, {"expert", s.expert}});
  return a.dump();
}

absl::StatusOr<std::vector<SlotId>> SlotsFromJson(const std::string& text) {
  std::vector<SlotId> out;
  if (text.empty()) return out;
  json a = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!a.is_array()) return absl::DataLossError("stored slots are not a JSON array");
  for (const json& e : a) {
    SlotId s;
    if (e.is_object() && e.contains("layer") && e.contains("expert") && e["layer"].is_number_integer() &&
        e["expert"].is_number_integer()) {
      s.layer = e["layer"].get<int>();
      s.expert = e["expert"].get<int>();
    } else if (e.is_array() && e.size() == 2 && e[0].is_number_integer() && e[1].is_number_integer()) {
      s.layer = e[0].get<int>();
      s.expert = e[1].get<int>();
    } else {
      return absl::DataLossError("stored slot is neither {layer, expert} nor [layer, expert]");
    }
    out.push_back(s);
  }
  return out;
}

std::string JobSpec::ToJson() const {
  json j = {
      {"max_steps", max_steps},
      {"batch_size", batch_size},
      {"seq_len", seq_len},
      {"learning_rate", learning_rate},
      {"warmup_steps", warmup_steps},
      {"weight_decay", weight_decay},
      {"seed", seed},
      {"selection", auto_select ? "auto" : "explicit"},
      {"relevance_threshold", relevance_threshold},
      {"max_experts", max_experts},
      {"slots", json::parse(SlotsToJson(slots))},
      {"base_version", base_version},
      {"auto_promote", auto_promote},
      {"eval_every", eval_every},
      {"early_stopping_patience", early_stopping_patience},
      {"early_stopping_min_delta", early_stopping_min_delta},
      {"keep_best", keep_best},
      {"auto_fields", auto_fields},
      {"method", method},
      {"lora_rank", lora_rank},
  };
  if (max_general_regression) j["max_general_regression"] = *max_general_regression;
  return j.dump();
}

absl::StatusOr<JobSpec> JobSpec::FromJson(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return absl::DataLossError("stored job spec is not a JSON object");
  JobSpec s;
  try {
    s.max_steps = j.value("max_steps", s.max_steps);
    s.batch_size = j.value("batch_size", s.batch_size);
    s.seq_len = j.value("seq_len", s.seq_len);
    s.learning_rate = j.value("learning_rate", s.learning_rate);
    s.warmup_steps = j.value("warmup_steps", s.warmup_steps);
    s.weight_decay = j.value("weight_decay", s.weight_decay);
    s.seed = j.value("seed", s.seed);
    s.auto_select = j.value("selection", std::string("auto")) == "auto";
    s.relevance_threshold = j.value("relevance_threshold", s.relevance_threshold);
    s.max_experts = j.value("max_experts", s.max_experts);
    s.base_version = j.value("base_version", s.base_version);
    s.auto_promote = j.value("auto_promote", s.auto_promote);
    s.eval_every = j.value("eval_every", s.eval_every);
    s.early_stopping_patience = j.value("early_stopping_patience", s.early_stopping_patience);
    s.early_stopping_min_delta = j.value("early_stopping_min_delta", s.early_stopping_min_delta);
    s.keep_best = j.value("keep_best", s.keep_best);
    s.auto_fields = j.value("auto_fields", s.auto_fields);
    s.method = j.value("method", s.method);
    s.lora_rank = j.value("lora_rank", s.lora_rank);
    if (j.contains("max_general_regression")) s.max_general_regression = j["max_general_regression"].get<double>();
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat("stored job spec: ", e.what()));
  }
  if (j.contains("slots")) {
    absl::StatusOr<std::vector<SlotId>> slots = SlotsFromJson(j["slots"].dump());
    if (!slots.ok()) return slots.status();
    s.slots = *std::move(slots);
  }
  return s;
}

}  // namespace tessera::services
