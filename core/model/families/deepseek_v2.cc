// deepseek_v2 (DeepseekV2ForCausalLM): multi-head latent attention (core/model/mla_attention.h; the
// complex-number rotary of transformers' DeepseekV2 rotates the rope dims in pairs (2i, 2i+1), i.e.
// rope_interleave) with a softmax router as transformers' DeepseekV2TopkRouter computes it:
//   topk_method greedy              : the top_k softmax scores (n_group / topk_group ignored);
//   topk_method group_limited_greedy: among the topk_group of n_group groups with the largest best score
//                                     (core/model/host_router.h);
// the weights are the chosen scores, never renormalized (the router ignores norm_topk_prob), scaled by
// routed_scaling_factor; n_shared_experts shared experts as one MLP (mlp.shared_experts.*); the first
// first_k_dense_replace layers dense (width intermediate_size). Experts = n_routed_experts. As for
// deepseek_v3 the config's head_dim is the rope width. Refused by name: attention_bias, other
// topk_methods.
#include "absl/strings/str_cat.h"
#include "core/model/families/family.h"
#include "core/util/status_macros.h"

namespace tessera::families {
namespace {

absl::Status Parse(const Json& j, ModelConfig* c) {
  std::string method = "greedy";
  if (Present(j, "topk_method")) {
    if (!j["topk_method"].is_string()) return BadType("topk_method", "a string");
    method = j["topk_method"].get<std::string>();
  }
  if (method != "greedy" && method != "group_limited_greedy") {
    return Unsupported("topk_method", absl::StrCat("only greedy and group_limited_greedy, got '", method, "'"));
  }
  c->norm_topk_prob = false;  // DeepseekV2TopkRouter never renormalizes
  RETURN_IF_ERROR(ParseDeepseekMoeLayout(j, {2, 0, 1.0}, c));  // DeepseekV2Config's defaults
  c->router_scoring = ModelConfig::RouterScoring::kSoftmax;
  c->router_bias = false;
  c->n_group = 1;
  c->topk_group = 1;
  if (method == "group_limited_greedy") {
    ASSIGN_OR_RETURN(c->n_group, GetInt(j, "n_group"));
    ASSIGN_OR_RETURN(c->topk_group, GetInt(j, "topk_group"));
  }
  RETURN_IF_ERROR(ParseMla(j, c));
  c->rope_interleave = true;
  return absl::OkStatus();
}

void Write(const ModelConfig& c, Json* j) {
  WriteDeepseekMoeLayout(c, j);
  (*j)["norm_topk_prob"] = false;
  (*j)["topk_method"] = c.n_group > 1 ? "group_limited_greedy" : "greedy";
  WriteMla(c, j);
}

TensorNames Names() {
  TensorNames n;
  n.shared = "mlp.shared_experts";
  return n;
}

}  // namespace

const FamilyDescriptor kDeepseekV2Family = {ModelFamily::kDeepseekV2, "deepseek_v2", "DeepseekV2ForCausalLM",
                                            "n_routed_experts", "moe_intermediate_size", Names(), Parse, Write};

}  // namespace tessera::families
