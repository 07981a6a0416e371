// mixtral (MixtralForCausalLM): no q/k norm, top-k weights always renormalized, expert width =
// intermediate_size, experts = num_local_experts; tensors under block_sparse_moe with w1/w3/w2
// (gate/up/down). Refused: sliding_window.
#include "core/model/families/family.h"
#include "core/util/status_macros.h"

namespace tessera::families {
namespace {

absl::Status Parse(const Json& j, ModelConfig* c) {
  c->norm_topk_prob = true;  // Mixtral always renormalizes the top-k weights
  c->qk_norm = QkNorm::kNone;
  return RefuseSet(j, "sliding_window", "sliding-window attention");
}

void Write(const ModelConfig& c, Json* j) {
  (*j)["num_local_experts"] = c.num_experts;
  (*j)["intermediate_size"] = c.expert_dim;
  (*j)["sliding_window"] = nullptr;
  (*j)["router_jitter_noise"] = 0.0;
}

TensorNames Names() {
  TensorNames n;
  n.moe = "block_sparse_moe";
  n.parts[0] = "w1";
  n.parts[1] = "w3";
  n.parts[2] = "w2";
  return n;
}

}  // namespace

const FamilyDescriptor kMixtralFamily = {ModelFamily::kMixtral, "mixtral", "MixtralForCausalLM", "num_local_experts",
                                         "intermediate_size", Names(), Parse, Write};

}  // namespace tessera::families
