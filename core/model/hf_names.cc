// HF tensor names per family (see hf_names.h), from the family table's TensorNames.
#include "core/model/hf_names.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/model/families/family.h"

namespace tessera::hf {
namespace {

const families::TensorNames& Names(ModelFamily family) { return families::Family(family).names; }

const char* MlpPartName(ExpertPart part) {
  switch (part) {
    case ExpertPart::kGate: return "gate_proj";
    case ExpertPart::kUp: return "up_proj";
    case ExpertPart::kDown: return "down_proj";
  }
  return "?";
}

}  // namespace

std::string EmbedName() { return "model.embed_tokens.weight"; }
std::string FinalNormName() { return "model.norm.weight"; }
std::string LmHeadName() { return "lm_head.weight"; }

std::string LayerTensorName(ModelFamily family, int64_t layer, LayerTensor which) {
  const std::string p = absl::StrCat("model.layers.", layer, ".");
  const families::TensorNames& n = Names(family);
  switch (which) {
    case LayerTensor::kInputNorm: return p + "input_layernorm.weight";
    case LayerTensor::kQProj: return p + "self_attn.q_proj.weight";
    case LayerTensor::kKProj: return p + "self_attn.k_proj.weight";
    case LayerTensor::kVProj: return p + "self_attn.v_proj.weight";
    case LayerTensor::kOProj: return p + "self_attn.o_proj.weight";
    case LayerTensor::kQNorm: return p + "self_attn.q_norm.weight";
    case LayerTensor::kKNorm: return p + "self_attn.k_norm.weight";
    case LayerTensor::kPostNorm: return p + "post_attention_layernorm.weight";
    case LayerTensor::kRouter: return absl::StrCat(p, n.moe, ".", n.router);
    case LayerTensor::kQBias: return p + "self_attn.q_proj.bias";
    case LayerTensor::kKBias: return p + "self_attn.k_proj.bias";
    case LayerTensor::kVBias: return p + "self_attn.v_proj.bias";
    case LayerTensor::kQAProj: return p + "self_attn.q_a_proj.weight";
    case LayerTensor::kQANorm: return p + "self_attn.q_a_layernorm.weight";
    case LayerTensor::kQBProj: return p + "self_attn.q_b_proj.weight";
    case LayerTensor::kKvAProj: return p + "self_attn.kv_a_proj_with_mqa.weight";
    case LayerTensor::kKvANorm: return p + "self_attn.kv_a_layernorm.weight";
    case LayerTensor::kKvBProj: return p + "self_attn.kv_b_proj.weight";
    case LayerTensor::kRouterBias: return absl::StrCat(p, n.moe, ".", n.router_bias);
    case LayerTensor::kSharedGate:
      return absl::StrCat(p, n.shared_gate != nullptr ? n.shared_gate : "mlp.shared_expert_gate.weight");
  }
  return "?";
}

std::string ExpertName(ModelFamily family, int64_t layer, int64_t expert, ExpertPart part) {
  const families::TensorNames& n = Names(family);
  return absl::StrCat("model.layers.", layer, ".", n.moe, ".experts.", expert, ".",
                      n.parts[static_cast<int>(part)], ".weight");
}

std::string MlpName(ModelFamily family, int64_t layer, bool dense_layer, ExpertPart part) {
  const families::TensorNames& n = Names(family);
  const char* prefix = dense_layer ? n.dense : (n.shared != nullptr ? n.shared : "mlp.shared_expert");
  return absl::StrCat("model.layers.", layer, ".", prefix, ".", MlpPartName(part), ".weight");
}

std::optional<ParsedExpertName> ParseExpertName(ModelFamily family, std::string_view name) {
  // model.layers.{l}.{prefix}.experts.{e}.{part}.weight
  const families::TensorNames& n = Names(family);
  std::vector<std::string> parts = absl::StrSplit(std::string(name), '.');
  if (parts.size() != 8 || parts[0] != "model" || parts[1] != "layers" || parts[3] != n.moe ||
      parts[4] != "experts" || parts[7] != "weight") {
    return std::nullopt;
  }
  ParsedExpertName out;
  if (!absl::SimpleAtoi(parts[2], &out.layer) || !absl::SimpleAtoi(parts[5], &out.expert)) {
    return std::nullopt;
  }
  if (out.layer < 0 || out.expert < 0) return std::nullopt;
  for (ExpertPart p : {ExpertPart::kGate, ExpertPart::kUp, ExpertPart::kDown}) {
    if (parts[6] == n.parts[static_cast<int>(p)]) {
      out.part = p;
      return out;
    }
  }
  return std::nullopt;
}

std::optional<FusedSlice> FusedExpertSource(const ModelConfig& c, int64_t layer, int64_t expert, ExpertPart part) {
  const families::TensorNames& n = Names(c.family);
  if (n.fused_gate_up == nullptr) return std::nullopt;
  const int64_t d = c.hidden_size, f = c.expert_dim, e_count = c.num_experts;
  FusedSlice s;
  if (part == ExpertPart::kDown) {
    s.name = absl::StrCat("model.layers.", layer, ".", n.moe, ".", n.fused_down);
    s.fused_shape = {e_count, d, f};
    s.offset = expert * d * f;
  } else {
    s.name = absl::StrCat("model.layers.", layer, ".", n.moe, ".", n.fused_gate_up);
    s.fused_shape = {e_count, 2 * f, d};
    s.offset = expert * 2 * f * d + (part == ExpertPart::kUp ? f * d : 0);
  }
  s.count = f * d;
  return s;
}

std::optional<FusedSlice> FusedExpertSource(const ModelConfig& c, std::string_view name) {
  if (Names(c.family).fused_gate_up == nullptr) return std::nullopt;
  std::optional<ParsedExpertName> p = ParseExpertName(c.family, name);
  if (!p.has_value()) return std::nullopt;
  return FusedExpertSource(c, p->layer, p->expert, p->part);
}

}  // namespace tessera::hf
