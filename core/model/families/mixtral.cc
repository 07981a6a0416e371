// mixtral (MixtralForCausalLM): no q/k norm, top-k weights always renormalized, expert width =
// intermediate_size, experts = num_local_experts; tensors under block_sparse_moe with w1/w3/w2
// (gate/up/down). sliding_window (null: none) gives every layer that window (MixtralModel picks
// create_sliding_window_causal_mask for all layers when it is set).
#include "core/model/families/family.h"
#include "core/util/status_macros.h"

namespace tessera::families {
namespace {

absl::Status Parse(const Json& j, ModelConfig* c) {
  c->norm_topk_prob = true;  // Mixtral always renormalizes the top-k weights
  c->qk_norm = QkNorm::kNone;
  c->sliding_layers.clear();
  c->sliding_window = 0;
  if (Present(j, "sliding_window")) {
    ASSIGN_OR_RETURN(c->sliding_window, GetInt(j, "sliding_window"));
    if (c->sliding_window <= 0) return BadType("sliding_window", "null or an integer >= 1");
    for (int64_t l = 0; l < c->num_layers; ++l) c->sliding_layers.push_back(l);
  }
  return absl::OkStatus();
}

void Write(const ModelConfig& c, Json* j) {
  (*j)["num_local_experts"] = c.num_experts;
  (*j)["intermediate_size"] = c.expert_dim;
  if (c.sliding_layers.empty()) {
    (*j)["sliding_window"] = nullptr;
  } else {
    (*j)["sliding_window"] = c.sliding_window;  // every layer (Validate-d configs of this family)
  }
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
