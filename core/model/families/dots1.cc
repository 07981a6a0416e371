// dots1 (Dots1ForCausalLM, rednote's dots.llm1): qwen3_moe's attention (per-head q/k RMSNorm) with
// DeepSeek-V3's MoE: sigmoid router with e_score_correction_bias (mlp.gate.e_score_correction_bias) and
// group-limited top-k (n_group, topk_group), norm_topk_prob (default false), routed_scaling_factor,
// n_shared_experts shared experts as one MLP of width n_shared_experts * moe_intermediate_size
// (mlp.shared_experts.*, no gate), the first first_k_dense_replace layers dense (an MLP of width
// intermediate_size under mlp.*). Experts = n_routed_experts. Refused: layer_types other than
// full_attention (sliding windows).
#include "absl/strings/str_cat.h"
#include "core/model/families/family.h"
#include "core/util/status_macros.h"

namespace tessera::families {
namespace {

absl::Status Parse(const Json& j, ModelConfig* c) {
  ASSIGN_OR_RETURN(c->norm_topk_prob, GetBoolOr(j, "norm_topk_prob", false));
  c->qk_norm = QkNorm::kPerHead;
  if (Present(j, "layer_types")) {
    if (!j["layer_types"].is_array()) return BadType("layer_types", "a list of strings");
    for (const Json& t : j["layer_types"]) {
      if (t != "full_attention") {
        return Unsupported("layer_types", absl::StrCat("only full_attention layers, got ", t.dump()));
      }
    }
  }
  RETURN_IF_ERROR(ParseDeepseekMoeLayout(j, {0, 0, 1.0}, c));  // Dots1Config's defaults
  c->router_scoring = ModelConfig::RouterScoring::kSigmoid;
  c->router_bias = true;
  ASSIGN_OR_RETURN(c->n_group, GetIntOr(j, "n_group", 1));
  ASSIGN_OR_RETURN(c->topk_group, GetIntOr(j, "topk_group", 1));
  return absl::OkStatus();
}

void Write(const ModelConfig& c, Json* j) {
  WriteDeepseekMoeLayout(c, j);
  (*j)["norm_topk_prob"] = c.norm_topk_prob;
}

TensorNames Names() {
  TensorNames n;
  n.shared = "mlp.shared_experts";
  return n;
}

}  // namespace

const FamilyDescriptor kDots1Family = {ModelFamily::kDots1, "dots1", "Dots1ForCausalLM", "n_routed_experts",
                                       "moe_intermediate_size", Names(), Parse, Write};

}  // namespace tessera::families
