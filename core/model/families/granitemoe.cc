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
  ASSIGN_OR_RETURN(double emb, GetNumberOr(j, "embedding_multiplier", 1.0));
  ASSIGN_OR_RETURN(double attn, GetNumberOr(j, "attention_multiplier", 1.0));
  ASSIGN_OR_RETURN(double res, GetNumberOr(j, "residual_multiplier", 1.0));
  ASSIGN_OR_RETURN(double logits, GetNumberOr(j, "logits_scaling", 1.0));
  if (!(attn > 0.0)) return BadType("attention_multiplier", "> 0");
  if (!(logits > 0.0)) return BadType("logits_scaling", "> 0");
  c->embedding_multiplier = static_cast<float>(emb);
  c->attention_scale = static_cast<float>(attn);
  c->residual_multiplier = static_cast<float>(res);
  c->logits_scaling = static_cast<float>(logits);
  return absl::OkStatus();
}

void Write(const ModelConfig& c, Json* j) {
  (*j)["num_local_experts"] = c.num_experts;
  (*j)["intermediate_size"] = c.expert_dim;
  (*j)["embedding_multiplier"] = static_cast<double>(c.embedding_multiplier);
  (*j)["attention_multiplier"] = static_cast<double>(c.AttentionScale());
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
