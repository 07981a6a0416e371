// Parsing and writing of HF config.json: the fields every family shares here, the family-specific ones
// through the family table (families/family.h; see config.h).
#include "core/model/config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"
#include "core/model/families/family.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

using families::BadType;
using families::GetFloatOr;
using families::GetBoolOr;
using families::GetInt;
using families::GetIntOr;
using families::Json;
using families::Missing;
using families::Present;
using families::Unsupported;

// The expert count. transformers names it per family (Mixtral: num_local_experts; Qwen3-MoE, OLMoE:
// num_experts) but maps both names onto one attribute, and save_pretrained may write either (5.17 wrote
// Qwen3-MoE's as num_local_experts): accept both, `preferred` first; both present must agree.
absl::StatusOr<int64_t> GetExpertCount(const Json& j, const char* preferred) {
  const char* other = std::string(preferred) == "num_local_experts" ? "num_experts" : "num_local_experts";
  if (!Present(j, preferred) && !Present(j, other)) return Missing(preferred);
  if (!Present(j, preferred)) return GetInt(j, other);
  ASSIGN_OR_RETURN(int64_t n, GetInt(j, preferred));
  if (Present(j, other)) {
    ASSIGN_OR_RETURN(int64_t m, GetInt(j, other));
    if (m != n) {
      return absl::InvalidArgumentError(absl::StrCat("config.json: '", preferred, "' (", n, ") and '", other, "' (", m,
                                                     ") disagree"));
    }
  }
  return n;
}

}  // namespace

const char* ModelFamilyName(ModelFamily family) { return families::Family(family).model_type; }

bool ModelConfig::IsDenseLayer(int64_t layer) const {
  return std::binary_search(dense_layers.begin(), dense_layers.end(), layer);
}

int64_t ModelConfig::AttentionWindow(int64_t layer) const {
  return std::binary_search(sliding_layers.begin(), sliding_layers.end(), layer) ? sliding_window : 0;
}

float ModelConfig::BaseAttentionScale() const {
  return attention_scale > 0.0f ? attention_scale : 1.0f / std::sqrt(static_cast<float>(head_dim));
}

float ModelConfig::AttentionScale() const {
  const float base = BaseAttentionScale();
  if (rope_scaling.type == RopeScaling::Type::kNone) return base;
  // MLA: the attention factor scales only the rope dims (folded into MLA's weights, mla_attention.h).
  if (mla()) return static_cast<float>(base * MlaSoftmaxFactor(rope_scaling));
  // yarn multiplies cos and sin, i.e. q and k, by its attention factor: the scores by its square.
  const double af = RopeAttentionFactor(rope_scaling);
  return static_cast<float>(base * af * af);
}

absl::StatusOr<ModelConfig> ModelConfig::FromJson(std::string_view text) {
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("config.json: not a JSON object");
  }
  if (!Present(j, "model_type")) return Missing("model_type");
  if (!j["model_type"].is_string()) return BadType("model_type", "a string");
  const std::string type = j["model_type"].get<std::string>();
  const families::FamilyDescriptor* fam = families::FindFamily(type);
  if (fam == nullptr) {
    return Unsupported("model_type", absl::StrCat("'", type, "' (supported: ", families::SupportedModelTypes(), ")"));
  }
  ModelConfig c;
  c.family = fam->family;
  ASSIGN_OR_RETURN(c.hidden_size, GetInt(j, "hidden_size"));
  ASSIGN_OR_RETURN(c.num_layers, GetInt(j, "num_hidden_layers"));
  ASSIGN_OR_RETURN(c.num_heads, GetInt(j, "num_attention_heads"));
  ASSIGN_OR_RETURN(c.num_kv_heads, GetIntOr(j, "num_key_value_heads", c.num_heads));
  ASSIGN_OR_RETURN(c.vocab_size, GetInt(j, "vocab_size"));
  ASSIGN_OR_RETURN(c.top_k, GetInt(j, "num_experts_per_tok"));
  ASSIGN_OR_RETURN(c.max_position_embeddings, GetIntOr(j, "max_position_embeddings", 4096));
  if (c.num_heads <= 0) return absl::InvalidArgumentError("config.json: 'num_attention_heads' must be > 0");
  ASSIGN_OR_RETURN(c.head_dim, GetIntOr(j, "head_dim", c.hidden_size / c.num_heads));
  ASSIGN_OR_RETURN(c.rms_norm_eps, GetFloatOr(j, "rms_norm_eps", 1e-6f));
  RETURN_IF_ERROR(families::ParseRopeScaling(j, c.max_position_embeddings, &c.rope_scaling));
  c.rope_theta = 10000.0f;
  if (Present(j, "rope_theta")) {
    ASSIGN_OR_RETURN(c.rope_theta, GetFloatOr(j, "rope_theta", c.rope_theta));
  } else if (Present(j, "rope_parameters") && Present(j["rope_parameters"], "rope_theta")) {
    ASSIGN_OR_RETURN(c.rope_theta, GetFloatOr(j["rope_parameters"], "rope_theta", c.rope_theta));
  }
  ASSIGN_OR_RETURN(c.tie_word_embeddings, GetBoolOr(j, "tie_word_embeddings", false));

  if (Present(j, "hidden_act") && j["hidden_act"] != "silu") {
    return Unsupported("hidden_act", absl::StrCat("only silu, got ", j["hidden_act"].dump()));
  }
  RETURN_IF_ERROR(families::RefuseTrue(j, "attention_bias", "biases in the q/k/v/o projections"));
  ASSIGN_OR_RETURN(c.num_experts, GetExpertCount(j, fam->experts_key));
  ASSIGN_OR_RETURN(c.expert_dim, GetInt(j, fam->expert_width_key));
  RETURN_IF_ERROR(fam->parse(j, &c));
  RETURN_IF_ERROR(c.Validate());
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::FromFile(const std::string& path) {
  std::string file = path;
  std::ifstream probe(file + "/config.json");
  if (probe.good()) file += "/config.json";
  std::ifstream in(file, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open config file '", file, "'"));
  std::stringstream ss;
  ss << in.rdbuf();
  auto c = FromJson(ss.str());
  if (!c.ok()) {
    return absl::Status(c.status().code(), absl::StrCat(file, ": ", c.status().message()));
  }
  return c;
}

absl::Status ModelConfig::Validate() const {
  auto positive = [](int64_t v, const char* name) -> absl::Status {
    if (v <= 0) return absl::InvalidArgumentError(absl::StrCat("config: '", name, "' must be > 0, got ", v));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(positive(hidden_size, "hidden_size"));
  RETURN_IF_ERROR(positive(num_layers, "num_hidden_layers"));
  RETURN_IF_ERROR(positive(num_heads, "num_attention_heads"));
  RETURN_IF_ERROR(positive(num_kv_heads, "num_key_value_heads"));
  RETURN_IF_ERROR(positive(head_dim, "head_dim"));
  const families::FamilyDescriptor& fam = families::Family(family);
  RETURN_IF_ERROR(positive(num_experts, fam.experts_key));
  RETURN_IF_ERROR(positive(top_k, "num_experts_per_tok"));
  RETURN_IF_ERROR(positive(expert_dim, fam.expert_width_key));
  RETURN_IF_ERROR(positive(vocab_size, "vocab_size"));
  RETURN_IF_ERROR(positive(max_position_embeddings, "max_position_embeddings"));
  if (num_heads % num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config: 'num_key_value_heads' (", num_kv_heads, ") must divide 'num_attention_heads' (", num_heads, ")"));
  }
  if (head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("config: 'head_dim' must be even for RoPE, got ", head_dim));
  }
  if (top_k > num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("config: 'num_experts_per_tok' (", top_k,
                                                   ") exceeds the number of experts (", num_experts, ")"));
  }
  if (!(rms_norm_eps > 0.0f)) return absl::InvalidArgumentError("config: 'rms_norm_eps' must be > 0");
  if (!(rope_theta > 0.0f)) return absl::InvalidArgumentError("config: 'rope_theta' must be > 0");
  if (shared_expert_dim < 0) return absl::InvalidArgumentError("config: the shared expert width must be >= 0");
  if (shared_expert_gate && shared_expert_dim == 0) {
    return absl::InvalidArgumentError("config: a shared expert gate needs a shared expert");
  }
  for (size_t i = 0; i < dense_layers.size(); ++i) {
    if (dense_layers[i] < 0 || dense_layers[i] >= num_layers || (i > 0 && dense_layers[i] <= dense_layers[i - 1])) {
      return absl::InvalidArgumentError("config: dense layers must be sorted, distinct and in [0, num_hidden_layers)");
    }
  }
  if (!dense_layers.empty()) RETURN_IF_ERROR(positive(dense_dim, "intermediate_size"));
  for (size_t i = 0; i < sliding_layers.size(); ++i) {
    if (sliding_layers[i] < 0 || sliding_layers[i] >= num_layers ||
        (i > 0 && sliding_layers[i] <= sliding_layers[i - 1])) {
      return absl::InvalidArgumentError("config: sliding-window layers must be sorted, distinct and in [0, num_hidden_layers)");
    }
  }
  if (!sliding_layers.empty()) {
    RETURN_IF_ERROR(positive(sliding_window, "sliding_window"));
    if (mla()) return absl::InvalidArgumentError("config: sliding-window attention with MLA is not supported");
  }
  if (n_group <= 0 || num_experts % n_group != 0) {
    return absl::InvalidArgumentError(absl::StrCat("config: 'n_group' (", n_group, ") must divide the experts (",
                                                   num_experts, ")"));
  }
  if (topk_group <= 0 || topk_group > n_group) {
    return absl::InvalidArgumentError("config: 'topk_group' must be in [1, n_group]");
  }
  if (n_group > 1 && num_experts / n_group < 2) {
    return absl::InvalidArgumentError("config: grouped routing needs at least 2 experts per group");
  }
  if (n_group > 1 && top_k > topk_group * (num_experts / n_group)) {
    return absl::InvalidArgumentError("config: 'num_experts_per_tok' exceeds the experts of 'topk_group' groups");
  }
  if (mla()) {
    RETURN_IF_ERROR(positive(qk_rope_head_dim, "qk_rope_head_dim"));
    RETURN_IF_ERROR(positive(v_head_dim, "v_head_dim"));
    if (q_lora_rank < 0) return absl::InvalidArgumentError("config: 'q_lora_rank' must be >= 0 or null");
    if (qk_nope_head_dim < 0 || qk_nope_head_dim % 2 != 0 || qk_rope_head_dim % 2 != 0) {
      return absl::InvalidArgumentError("config: 'qk_nope_head_dim' and 'qk_rope_head_dim' must be even and >= 0");
    }
    if (head_dim != qk_nope_head_dim + qk_rope_head_dim || num_kv_heads != num_heads) {
      return absl::InvalidArgumentError("config: MLA needs head_dim = qk_nope_head_dim + qk_rope_head_dim and "
                                        "num_key_value_heads = num_attention_heads");
    }
    if (v_head_dim > head_dim) {
      return absl::InvalidArgumentError("config: 'v_head_dim' larger than the q/k head width is not supported");
    }
  }
  if (static_cast<int64_t>(dense_layers.size()) == num_layers) {
    return absl::InvalidArgumentError("config: every layer is dense (no expert layer to fine-tune)");
  }
  for (float m : {embedding_multiplier, residual_multiplier, logits_scaling, routed_scaling_factor}) {
    if (!std::isfinite(m) || m == 0.0f) {
      return absl::InvalidArgumentError("config: multipliers and scaling factors must be finite and nonzero");
    }
  }
  return absl::OkStatus();
}

std::string ModelConfig::ToJson() const {
  Json j;
  const families::FamilyDescriptor& fam = families::Family(family);
  j["model_type"] = fam.model_type;
  j["architectures"] = {fam.architecture};
  fam.write(*this, &j);
  j["hidden_size"] = hidden_size;
  j["num_hidden_layers"] = num_layers;
  j["num_attention_heads"] = num_heads;
  j["num_key_value_heads"] = num_kv_heads;
  j["head_dim"] = mla() ? qk_rope_head_dim : head_dim;  // transformers' DeepseekV3Config: the rope width
  j["num_experts_per_tok"] = top_k;
  j["vocab_size"] = vocab_size;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = static_cast<double>(rms_norm_eps);
  j["rope_theta"] = static_cast<double>(rope_theta);
  j["rope_scaling"] = nullptr;
  if (rope_scaling.type != RopeScaling::Type::kNone) families::WriteRopeScaling(*this, &j);
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["hidden_act"] = "silu";
  j["torch_dtype"] = "float32";
  j["output_router_logits"] = false;
  return j.dump(2) + "\n";
}

ModelConfig ModelConfig::BuiltinTiny() {
  ModelConfig c;
  c.family = ModelFamily::kQwen3Moe;
  c.hidden_size = 192;
  c.num_layers = 4;
  c.num_heads = 6;
  c.num_kv_heads = 2;
  c.head_dim = 32;
  c.num_experts = 16;
  c.top_k = 4;
  c.expert_dim = 96;
  c.vocab_size = 264;  // 259 byte-tokenizer ids, padded to a multiple of 8
  c.max_position_embeddings = 2048;
  c.norm_topk_prob = true;
  c.tie_word_embeddings = true;
  c.rms_norm_eps = 1e-6f;
  c.rope_theta = 10000.0f;
  c.qk_norm = QkNorm::kPerHead;
  return c;
}

ModelConfig ModelConfig::BuiltinSmall() {
  ModelConfig c;
  c.family = ModelFamily::kQwen3Moe;
  c.hidden_size = 1024;
  c.num_layers = 8;
  c.num_heads = 16;
  c.num_kv_heads = 4;
  c.head_dim = 64;
  c.num_experts = 32;
  c.top_k = 4;
  c.expert_dim = 512;
  c.vocab_size = 32000;
  c.max_position_embeddings = 4096;
  c.norm_topk_prob = true;
  c.tie_word_embeddings = false;
  c.rms_norm_eps = 1e-6f;
  c.rope_theta = 1000000.0f;
  c.qk_norm = QkNorm::kPerHead;
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::Builtin(std::string_view name) {
  if (name == "builtin:tiny") return BuiltinTiny();
  if (name == "builtin:small") return BuiltinSmall();
  return absl::NotFoundError(absl::StrCat("unknown builtin model '", std::string(name), "'"));
}

int64_t ModelConfig::NumParameters() const {
  const int64_t d = hidden_size;
  int64_t qk_norm_params = 0;
  if (qk_norm == QkNorm::kPerHead) qk_norm_params = 2 * head_dim;
  if (qk_norm == QkNorm::kFull) qk_norm_params = q_dim() + kv_dim();
  int64_t attention = 2 * d + d * q_dim() * 2 + d * kv_dim() * 2 + qk_norm_params +
                      (qkv_bias ? q_dim() + 2 * kv_dim() : 0);
  if (mla()) {
    const int64_t q = q_lora_rank > 0 ? q_lora_rank * d + q_lora_rank + q_dim() * q_lora_rank : q_dim() * d;
    attention = 2 * d + q + (kv_lora_rank + qk_rope_head_dim) * d + kv_lora_rank +
                num_heads * (qk_nope_head_dim + v_head_dim) * kv_lora_rank + d * o_in_dim();
  }
  int64_t total = vocab_size * d * (tie_word_embeddings ? 1 : 2) + d;
  for (int64_t l = 0; l < num_layers; ++l) {
    total += attention + 3 * d * MlpDim(l);
    if (!IsDenseLayer(l)) {
      total += num_experts * d + num_experts * ExpertParameters() + (shared_expert_gate ? d : 0) +
               (router_bias ? num_experts : 0);
    }
  }
  return total;
}

}  // namespace tessera
