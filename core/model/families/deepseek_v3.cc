// deepseek_v3 (DeepseekV3ForCausalLM): multi-head latent attention (core/model/mla_attention.h: q_lora_rank
// (null: a plain q_proj), kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim, rope_interleave
// (default true)) with dots1's MoE: sigmoid router with e_score_correction_bias and group-limited top-k
// (n_group, topk_group), norm_topk_prob (default true), routed_scaling_factor, n_shared_experts shared
// experts as one MLP (mlp.shared_experts.*), the first first_k_dense_replace layers dense (width
// intermediate_size). Experts = n_routed_experts. The config's head_dim is the rope width (transformers
// sets it so); Tessera's head_dim is the q/k head width qk_nope_head_dim + qk_rope_head_dim.
// rope_scaling applies to the rope dims (mla_attention.h; yarn's mscale_all_dim scales the softmax).
// Refused by name: attention_bias, topk_method other than noaux_tc.
#include "absl/strings/str_cat.h"
#include "core/model/families/family.h"
#include "core/util/status_macros.h"

namespace tessera::families {

absl::Status ParseMla(const Json& j, ModelConfig* c) {
  c->qk_norm = QkNorm::kNone;
  c->q_lora_rank = 0;
  if (Present(j, "q_lora_rank")) { ASSIGN_OR_RETURN(c->q_lora_rank, GetInt(j, "q_lora_rank")); }
  ASSIGN_OR_RETURN(c->kv_lora_rank, GetInt(j, "kv_lora_rank"));
  if (c->kv_lora_rank <= 0) return BadType("kv_lora_rank", "> 0");
  ASSIGN_OR_RETURN(c->qk_nope_head_dim, GetInt(j, "qk_nope_head_dim"));
  ASSIGN_OR_RETURN(c->qk_rope_head_dim, GetInt(j, "qk_rope_head_dim"));
  ASSIGN_OR_RETURN(c->v_head_dim, GetInt(j, "v_head_dim"));
  c->head_dim = c->qk_nope_head_dim + c->qk_rope_head_dim;
  c->num_kv_heads = c->num_heads;
  return absl::OkStatus();
}

void WriteMla(const ModelConfig& c, Json* j) {
  if (c.q_lora_rank > 0) {
    (*j)["q_lora_rank"] = c.q_lora_rank;
  } else {
    (*j)["q_lora_rank"] = nullptr;
  }
  (*j)["kv_lora_rank"] = c.kv_lora_rank;
  (*j)["qk_nope_head_dim"] = c.qk_nope_head_dim;
  (*j)["qk_rope_head_dim"] = c.qk_rope_head_dim;
  (*j)["v_head_dim"] = c.v_head_dim;
}

absl::Status ParseDeepseekMoeLayout(const Json& j, const DeepseekDefaults& def, ModelConfig* c) {
  ASSIGN_OR_RETURN(c->routed_scaling_factor, GetFloatOr(j, "routed_scaling_factor", static_cast<float>(def.routed_scaling_factor)));
  ASSIGN_OR_RETURN(int64_t shared, GetIntOr(j, "n_shared_experts", def.n_shared_experts));
  if (shared < 0) return BadType("n_shared_experts", ">= 0");
  c->shared_expert_dim = shared * c->expert_dim;
  c->shared_expert_gate = false;
  ASSIGN_OR_RETURN(int64_t first_dense, GetIntOr(j, "first_k_dense_replace", def.first_k_dense_replace));
  if (first_dense < 0 || first_dense >= c->num_layers) {
    return BadType("first_k_dense_replace", "in [0, num_hidden_layers)");
  }
  c->dense_layers.clear();
  for (int64_t l = 0; l < first_dense; ++l) c->dense_layers.push_back(l);
  if (first_dense > 0) { ASSIGN_OR_RETURN(c->dense_dim, GetInt(j, "intermediate_size")); }
  return absl::OkStatus();
}

void WriteDeepseekMoeLayout(const ModelConfig& c, Json* j) {
  (*j)["n_routed_experts"] = c.num_experts;
  (*j)["moe_intermediate_size"] = c.expert_dim;
  (*j)["intermediate_size"] = c.dense_layers.empty() ? c.expert_dim : c.dense_dim;
  (*j)["n_shared_experts"] = c.shared_expert_dim / c.expert_dim;
  (*j)["first_k_dense_replace"] = static_cast<int64_t>(c.dense_layers.size());
  (*j)["routed_scaling_factor"] = static_cast<double>(c.routed_scaling_factor);
  (*j)["n_group"] = c.n_group;
  (*j)["topk_group"] = c.topk_group;
  (*j)["attention_bias"] = false;
}

namespace {

absl::Status Parse(const Json& j, ModelConfig* c) {
  if (Present(j, "topk_method") && j["topk_method"] != "noaux_tc") {
    return Unsupported("topk_method", absl::StrCat("only noaux_tc, got ", j["topk_method"].dump()));
  }
  ASSIGN_OR_RETURN(c->norm_topk_prob, GetBoolOr(j, "norm_topk_prob", true));
  RETURN_IF_ERROR(ParseDeepseekMoeLayout(j, {1, 3, 2.5}, c));  // DeepseekV3Config's defaults
  c->router_scoring = ModelConfig::RouterScoring::kSigmoid;
  c->router_bias = true;
  ASSIGN_OR_RETURN(c->n_group, GetIntOr(j, "n_group", 8));
  ASSIGN_OR_RETURN(c->topk_group, GetIntOr(j, "topk_group", 4));
  RETURN_IF_ERROR(ParseMla(j, c));
  ASSIGN_OR_RETURN(c->rope_interleave, GetBoolOr(j, "rope_interleave", true));
  return absl::OkStatus();
}

void Write(const ModelConfig& c, Json* j) {
  WriteDeepseekMoeLayout(c, j);
  (*j)["norm_topk_prob"] = c.norm_topk_prob;
  (*j)["topk_method"] = "noaux_tc";
  WriteMla(c, j);
  (*j)["rope_interleave"] = c.rope_interleave;
}

TensorNames Names() {
  TensorNames n;
  n.shared = "mlp.shared_experts";
  return n;
}

}  // namespace

const FamilyDescriptor kDeepseekV3Family = {ModelFamily::kDeepseekV3, "deepseek_v3", "DeepseekV3ForCausalLM",
                                            "n_routed_experts", "moe_intermediate_size", Names(), Parse, Write};

}  // namespace tessera::families
