// HF tensor names per family (see hf_names.h).
#include "core/model/hf_names.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace tessera::hf {
namespace {

const char* MoePrefix(ModelFamily family) {
  return family == ModelFamily::kMixtral ? "block_sparse_moe" : "mlp";
}

const char* PartName(ModelFamily family, ExpertPart part) {
  if (family == ModelFamily::kMixtral) {
    switch (part) {
      case ExpertPart::kGate: return "w1";
      case ExpertPart::kUp: return "w3";
      case ExpertPart::kDown: return "w2";
    }
  }
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
  switch (which) {
    case LayerTensor::kInputNorm: return p + "input_layernorm.weight";
    case LayerTensor::kQProj: return p + "self_attn.q_proj.weight";
    case LayerTensor::kKProj: return p + "self_attn.k_proj.weight";
    case LayerTensor::kVProj: return p + "self_attn.v_proj.weight";
    case LayerTensor::kOProj: return p + "self_attn.o_proj.weight";
    case LayerTensor::kQNorm: return p + "self_attn.q_norm.weight";
    case LayerTensor::kKNorm: return p + "self_attn.k_norm.weight";
    case LayerTensor::kPostNorm: return p + "post_attention_layernorm.weight";
    case LayerTensor::kRouter: return absl::StrCat(p, MoePrefix(family), ".gate.weight");
  }
  return "?";
}

std::string ExpertName(ModelFamily family, int64_t layer, int64_t expert, ExpertPart part) {
  return absl::StrCat("model.layers.", layer, ".", MoePrefix(family), ".experts.", expert, ".",
                      PartName(family, part), ".weight");
}

std::optional<ParsedExpertName> ParseExpertName(ModelFamily family, std::string_view name) {
  // model.layers.{l}.{prefix}.experts.{e}.{part}.weight
  std::vector<std::string> parts = absl::StrSplit(std::string(name), '.');
  if (parts.size() != 8 || parts[0] != "model" || parts[1] != "layers" || parts[3] != MoePrefix(family) ||
      parts[4] != "experts" || parts[7] != "weight") {
    return std::nullopt;
  }
  ParsedExpertName out;
  if (!absl::SimpleAtoi(parts[2], &out.layer) || !absl::SimpleAtoi(parts[5], &out.expert)) {
    return std::nullopt;
  }
  if (out.layer < 0 || out.expert < 0) return std::nullopt;
  for (ExpertPart p : {ExpertPart::kGate, ExpertPart::kUp, ExpertPart::kDown}) {
    if (parts[6] == PartName(family, p)) {
      out.part = p;
      return out;
    }
  }
  return std::nullopt;
}

}  // namespace tessera::hf
