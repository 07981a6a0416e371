// qwen2_moe (Qwen2MoeForCausalLM, Qwen1.5-MoE / Qwen2-57B-A14B): no q/k norm; q/k/v projections
// with biases (qkv_bias, HF default true); a shared expert of width shared_expert_intermediate_size
// (mlp.shared_expert.*) scaled by sigmoid(mlp.shared_expert_gate . x); norm_topk_prob (default false);
// expert width = moe_intermediate_size, experts = num_experts; dense layers (an MLP of width
// intermediate_size under mlp.*) where mlp_only_layers lists them, or else where
// (layer + 1) % decoder_sparse_step != 0. Sliding windows as Qwen2MoeConfig decides them: with
// use_sliding_window, the window is sliding_window (default 4096) on the layers `layer_types` marks
// "sliding_attention", or, without layer_types, on layer i when i is even and i < max_window_layers
// (default 28); without use_sliding_window the window is 0, so layer_types naming a sliding layer
// then (or a null window) is refused as transformers cannot run it either.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/model/families/family.h"
#include "core/util/status_macros.h"

namespace tessera::families {
namespace {

absl::Status Parse(const Json& j, ModelConfig* c) {
  ASSIGN_OR_RETURN(c->norm_topk_prob, GetBoolOr(j, "norm_topk_prob", false));
  c->qk_norm = QkNorm::kNone;
  ASSIGN_OR_RETURN(c->qkv_bias, GetBoolOr(j, "qkv_bias", true));
  ASSIGN_OR_RETURN(const bool use_sliding, GetBoolOr(j, "use_sliding_window", false));
  c->sliding_layers.clear();
  c->sliding_window = 0;
  if (Present(j, "layer_types")) {
    const Json& types = j["layer_types"];
    if (!types.is_array() || static_cast<int64_t>(types.size()) != c->num_layers) {
      return BadType("layer_types", "a list of num_hidden_layers strings");
    }
    for (int64_t l = 0; l < c->num_layers; ++l) {
      if (types[l] == "sliding_attention") {
        c->sliding_layers.push_back(l);
      } else if (types[l] != "full_attention") {
        return Unsupported("layer_types", absl::StrCat("only full_attention and sliding_attention layers, got ",
                                                       types[l].dump()));
      }
    }
  } else if (use_sliding) {
    ASSIGN_OR_RETURN(const int64_t max_window_layers, GetIntOr(j, "max_window_layers", 28));
    for (int64_t l = 0; l < c->num_layers; ++l) {
      if ((l + 1) % 2 != 0 && l < max_window_layers) c->sliding_layers.push_back(l);
    }
  }
  if (!c->sliding_layers.empty()) {
    if (!use_sliding) {
      return BadType("layer_types", "full_attention only unless use_sliding_window is true (the window is 0 then)");
    }
    if (j.contains("sliding_window") && j["sliding_window"].is_null()) {
      return BadType("sliding_window", "an integer >= 1 for sliding_attention layers");
    }
    ASSIGN_OR_RETURN(c->sliding_window, GetIntOr(j, "sliding_window", 4096));
    if (c->sliding_window <= 0) return BadType("sliding_window", "an integer >= 1 for sliding_attention layers");
  }
  ASSIGN_OR_RETURN(c->shared_expert_dim, GetIntOr(j, "shared_expert_intermediate_size", 0));
  if (c->shared_expert_dim < 0) return BadType("shared_expert_intermediate_size", ">= 0");
  c->shared_expert_gate = c->shared_expert_dim > 0;
  // Dense layers, as Qwen2MoeDecoderLayer decides them.
  ASSIGN_OR_RETURN(int64_t step, GetIntOr(j, "decoder_sparse_step", 1));
  if (step <= 0) return BadType("decoder_sparse_step", "an integer >= 1");
  std::vector<int64_t> mlp_only;
  if (Present(j, "mlp_only_layers")) {
    if (!j["mlp_only_layers"].is_array()) return BadType("mlp_only_layers", "a list of layer indices");
    for (const Json& v : j["mlp_only_layers"]) {
      if (!v.is_number_integer()) return BadType("mlp_only_layers", "a list of layer indices");
      mlp_only.push_back(v.get<int64_t>());
    }
  }
  c->dense_layers.clear();
  for (int64_t l = 0; l < c->num_layers; ++l) {
    const bool listed = std::find(mlp_only.begin(), mlp_only.end(), l) != mlp_only.end();
    if (listed || (l + 1) % step != 0) c->dense_layers.push_back(l);
  }
  if (!c->dense_layers.empty()) {
    ASSIGN_OR_RETURN(c->dense_dim, GetInt(j, "intermediate_size"));
  }
  return absl::OkStatus();
}

void Write(const ModelConfig& c, Json* j) {
  (*j)["num_experts"] = c.num_experts;
  (*j)["moe_intermediate_size"] = c.expert_dim;
  (*j)["intermediate_size"] = c.dense_layers.empty() ? c.expert_dim : c.dense_dim;
  (*j)["shared_expert_intermediate_size"] = c.shared_expert_dim;
  (*j)["norm_topk_prob"] = c.norm_topk_prob;
  (*j)["qkv_bias"] = c.qkv_bias;
  (*j)["decoder_sparse_step"] = 1;
  (*j)["mlp_only_layers"] = c.dense_layers;
  (*j)["use_sliding_window"] = !c.sliding_layers.empty();
  if (c.sliding_layers.empty()) {
    (*j)["sliding_window"] = nullptr;
  } else {
    // layer_types states the layers exactly (max_window_layers is then unused by transformers).
    (*j)["sliding_window"] = c.sliding_window;
    (*j)["max_window_layers"] = c.num_layers;
    Json types = Json::array();
    for (int64_t l = 0; l < c.num_layers; ++l) types.push_back(c.AttentionWindow(l) > 0 ? "sliding_attention" : "full_attention");
    (*j)["layer_types"] = types;
  }
}

TensorNames Names() {
  TensorNames n;
  n.shared = "mlp.shared_expert";
  n.shared_gate = "mlp.shared_expert_gate.weight";
  return n;
}

}  // namespace

const FamilyDescriptor kQwen2MoeFamily = {ModelFamily::kQwen2Moe, "qwen2_moe", "Qwen2MoeForCausalLM", "num_experts",
                                          "moe_intermediate_size", Names(), Parse, Write};

}  // namespace tessera::families
