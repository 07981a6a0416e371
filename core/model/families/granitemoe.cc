// granitemoe (GraniteMoeForCausalLM): no q/k norm; embeddings scaled by embedding_multiplier, the
// attention softmax scale is attention_multiplier (instead of 1/sqrt(head_dim)), each block's output is
// scaled by residual_multiplier before the residual add, logits are divided by logits_scaling. Router:
// top-k over the logits, then softmax over those k, which is the softmax's top-k renormalized
// (norm_topk_prob = true). Experts = num_local_experts of width intermediate_size, stored fused:
// block_sparse_moe.input_linear.weight [E, 2F, D] (gate rows first), output_linear.weight [E, D, F];
// router block_sparse_moe.router.layer.weight [E, D]. Refused: attention_bias (biases on all four
// projections, o_proj's included).
#include "core/model/families/family.h"
#include "core/util/status_macros.h"

namespace tessera::families {
namespace {

absl::Status Parse(const Json& j, ModelConfig* c) {
  c->norm_topk_prob = true;
  c->qk_norm = QkNorm::kNone;
  ASSIGN_OR_RETURN(c->embedding_multiplier, GetFloatOr(j, "embedding_multiplier", 1.0f));
  ASSIGN_OR_RETURN(c->attention_scale, GetFloatOr(j, "attention_multiplier", 1.0f));
  ASSIGN_OR_RETURN(c->residual_multiplier, GetFloatOr(j, "residual_multiplier", 1.0f));
  ASSIGN_OR_RETURN(c->logits_scaling, GetFloatOr(j, "logits_scaling", 1.0f));
  if (!(c->attention_scale > 0.0f)) return BadType("attention_multiplier", "> 0");
  if (!(c->logits_scaling > 0.0f)) return BadType("logits_scaling", "> 0");
  return absl::OkStatus();
}

void Write(const ModelConfig& c, Json* j) {
  (*j)["num_local_experts"] = c.num_experts;
  (*j)["intermediate_size"] = c.expert_dim;
  (*j)["embedding_multiplier"] = static_cast<double>(c.embedding_multiplier);
  // As config.json states it: AttentionScale() also folds in yarn's attention factor, which FromJson
  // would apply a second time.
  (*j)["attention_multiplier"] = static_cast<double>(c.BaseAttentionScale());
  (*j)["residual_multiplier"] = static_cast<double>(c.residual_multiplier);
  (*j)["logits_scaling"] = static_cast<double>(c.logits_scaling);
  (*j)["attention_bias"] = false;
}

TensorNames Names() {
  TensorNames n;
  n.moe = "block_sparse_moe";
  n.router = "router.layer.weight";
  n.fused_gate_up = "input_linear.weight";
  n.fused_down = "output_linear.weight";
  return n;
}

}  // namespace

const FamilyDescriptor kGraniteMoeFamily = {ModelFamily::kGraniteMoe, "granitemoe", "GraniteMoeForCausalLM",
                                            "num_local_experts", "intermediate_size", Names(), Parse, Write};

}  // namespace tessera::families
