// qwen3_moe (Qwen3MoeForCausalLM): per-head RMSNorm of q and k (weights [head_dim]), norm_topk_prob
// (HF default false), expert width = moe_intermediate_size, experts = num_experts. use_sliding_window
// (default false) gives every layer the window `sliding_window` (Qwen3MoeConfig's default 4096; null:
// none), as Qwen3MoeModel's single mask does. Refused: dense layers (decoder_sparse_step != 1,
// mlp_only_layers), shared experts.
#include "core/model/families/family.h"
#include "core/util/status_macros.h"

namespace tessera::families {
namespace {

absl::Status Parse(const Json& j, ModelConfig* c) {
  ASSIGN_OR_RETURN(c->norm_topk_prob, GetBoolOr(j, "norm_topk_prob", false));
  c->qk_norm = QkNorm::kPerHead;
  ASSIGN_OR_RETURN(const bool sliding, GetBoolOr(j, "use_sliding_window", false));
  c->sliding_layers.clear();
  c->sliding_window = 0;
  if (sliding && !(j.contains("sliding_window") && j["sliding_window"].is_null())) {
    ASSIGN_OR_RETURN(c->sliding_window, GetIntOr(j, "sliding_window", 4096));
    if (c->sliding_window <= 0) return BadType("sliding_window", "an integer >= 1 when use_sliding_window");
    for (int64_t l = 0; l < c->num_layers; ++l) c->sliding_layers.push_back(l);
  }
  ASSIGN_OR_RETURN(int64_t step, GetIntOr(j, "decoder_sparse_step", 1));
  if (step != 1) return Unsupported("decoder_sparse_step", "dense MLP layers (must be 1)");
  if (Present(j, "mlp_only_layers")) {
    if (!j["mlp_only_layers"].is_array()) return BadType("mlp_only_layers", "a list");
    if (!j["mlp_only_layers"].empty()) return Unsupported("mlp_only_layers", "dense MLP layers (must be empty)");
  }
  ASSIGN_OR_RETURN(int64_t shared, GetIntOr(j, "shared_expert_intermediate_size", 0));
  if (shared != 0) return Unsupported("shared_expert_intermediate_size", "shared experts");
  return absl::OkStatus();
}

void Write(const ModelConfig& c, Json* j) {
  (*j)["num_experts"] = c.num_experts;
  (*j)["moe_intermediate_size"] = c.expert_dim;
  (*j)["intermediate_size"] = c.expert_dim;  // unused: every layer is sparse
  (*j)["norm_topk_prob"] = c.norm_topk_prob;
  (*j)["decoder_sparse_step"] = 1;
  (*j)["mlp_only_layers"] = Json::array();
  (*j)["use_sliding_window"] = !c.sliding_layers.empty();
  if (c.sliding_layers.empty()) {
    (*j)["sliding_window"] = nullptr;
  } else {
    (*j)["sliding_window"] = c.sliding_window;  // every layer
  }
  (*j)["attention_bias"] = false;
}

}  // namespace

const FamilyDescriptor kQwen3MoeFamily = {ModelFamily::kQwen3Moe, "qwen3_moe", "Qwen3MoeForCausalLM", "num_experts",
                                          "moe_intermediate_size", TensorNames(), Parse, Write};

}  // namespace tessera::families
