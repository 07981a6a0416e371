// olmoe (OlmoeForCausalLM): RMSNorm over the whole q projection ([heads*head_dim]) and k projection
// ([kv_heads*head_dim]), norm_topk_prob (HF default false), expert width = intermediate_size,
// experts = num_experts. Refused: clip_qkv.
#include "core/model/families/family.h"
#include "core/util/status_macros.h"

namespace tessera::families {
namespace {

absl::Status Parse(const Json& j, ModelConfig* c) {
  ASSIGN_OR_RETURN(c->norm_topk_prob, GetBoolOr(j, "norm_topk_prob", false));
  c->qk_norm = QkNorm::kFull;
  return RefuseSet(j, "clip_qkv", "q/k/v clipping");
}

void Write(const ModelConfig& c, Json* j) {
  (*j)["num_experts"] = c.num_experts;
  (*j)["intermediate_size"] = c.expert_dim;
  (*j)["norm_topk_prob"] = c.norm_topk_prob;
  (*j)["clip_qkv"] = nullptr;
  (*j)["attention_bias"] = false;
}

}  // namespace

const FamilyDescriptor kOlmoeFamily = {ModelFamily::kOlmoe, "olmoe", "OlmoeForCausalLM", "num_experts",
                                       "intermediate_size", TensorNames(), Parse, Write};

}  // namespace tessera::families
