// The HF tensor names of each supported family, in one place. Everything that reads or writes
// weights (checkpoint loading, saving, overlays, gradients) goes through these functions, so a
// tenant's overlay merged into the backbone is a plain HF checkpoint.
//
//   all families : model.embed_tokens.weight, model.norm.weight, lm_head.weight,
//                  model.layers.{l}.input_layernorm.weight, .post_attention_layernorm.weight,
//                  model.layers.{l}.self_attn.{q,k,v,o}_proj.weight
//   qwen3_moe/olmoe: model.layers.{l}.self_attn.{q,k}_norm.weight,
//                  model.layers.{l}.mlp.gate.weight (router),
//                  model.layers.{l}.mlp.experts.{e}.{gate,up,down}_proj.weight
//   mixtral      : model.layers.{l}.block_sparse_moe.gate.weight,
//                  model.layers.{l}.block_sparse_moe.experts.{e}.{w1,w3,w2}.weight (gate, up, down)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/model/config.h"

namespace tessera::hf {

enum class ExpertPart { kGate, kUp, kDown };
enum class LayerTensor {
  kInputNorm, kQProj, kKProj, kVProj, kOProj, kQNorm, kKNorm, kPostNorm, kRouter
};

std::string EmbedName();
std::string FinalNormName();
std::string LmHeadName();
std::string LayerTensorName(ModelFamily family, int64_t layer, LayerTensor which);
std::string ExpertName(ModelFamily family, int64_t layer, int64_t expert, ExpertPart part);

// Parses an expert tensor name of `family` back into (layer, expert, part); nullopt if it is not one.
struct ParsedExpertName {
  int64_t layer = 0;
  int64_t expert = 0;
  ExpertPart part = ExpertPart::kGate;
};
std::optional<ParsedExpertName> ParseExpertName(ModelFamily family, std::string_view name);

}  // namespace tessera::hf
