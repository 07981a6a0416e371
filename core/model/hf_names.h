// The HF tensor names of each supported family, in one place (the per-family parts come from the
// family table, families/*.cc). Everything that reads or writes weights (checkpoint loading, saving,
// overlays, gradients) goes through these functions, so a tenant's overlay merged into the backbone is
// a plain HF checkpoint.
//
//   all families : model.embed_tokens.weight, model.norm.weight, lm_head.weight,
//                  model.layers.{l}.input_layernorm.weight, .post_attention_layernorm.weight,
//                  model.layers.{l}.self_attn.{q,k,v,o}_proj.weight
//   with q/k norm: model.layers.{l}.self_attn.{q,k}_norm.weight
//   with qkv bias: model.layers.{l}.self_attn.{q,k,v}_proj.bias
//   qwen3_moe/olmoe/qwen2_moe: model.layers.{l}.mlp.gate.weight (router),
//                  model.layers.{l}.mlp.experts.{e}.{gate,up,down}_proj.weight
//   qwen2_moe    : model.layers.{l}.mlp.shared_expert.{gate,up,down}_proj.weight,
//                  model.layers.{l}.mlp.shared_expert_gate.weight; dense layers model.layers.{l}.mlp.{gate,up,down}_proj.weight
//   mixtral      : model.layers.{l}.block_sparse_moe.gate.weight,
//                  model.layers.{l}.block_sparse_moe.experts.{e}.{w1,w3,w2}.weight (gate, up, down)
//   dots1        : model.layers.{l}.mlp.gate.weight, .mlp.gate.e_score_correction_bias,
//                  mlp.experts.{e}.*, mlp.shared_experts.{gate,up,down}_proj.weight; dense layers mlp.*
//   granitemoe   : model.layers.{l}.block_sparse_moe.router.layer.weight; experts fused in the
//                  checkpoint as block_sparse_moe.{input_linear,output_linear}.weight (FusedExpertSource),
//                  named per expert block_sparse_moe.experts.{e}.{gate,up,down}_proj.weight in Tessera
//                  (overlays, gradients).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/model/config.h"

namespace tessera::hf {

enum class ExpertPart { kGate, kUp, kDown };
enum class LayerTensor {
  kInputNorm, kQProj, kKProj, kVProj, kOProj, kQNorm, kKNorm, kPostNorm, kRouter, kQBias, kKBias, kVBias,
  kSharedGate, kRouterBias,
  // multi-head latent attention (mla_attention.h)
  kQAProj, kQANorm, kQBProj, kKvAProj, kKvANorm, kKvBProj
};

std::string EmbedName();
std::string FinalNormName();
std::string LmHeadName();
std::string LayerTensorName(ModelFamily family, int64_t layer, LayerTensor which);
std::string ExpertName(ModelFamily family, int64_t layer, int64_t expert, ExpertPart part);
// The always-on MLP of a layer: the shared expert of a sparse layer, the MLP of a dense one.
std::string MlpName(ModelFamily family, int64_t layer, bool dense_layer, ExpertPart part);

// Parses an expert tensor name of `family` back into (layer, expert, part); nullopt if it is not one.
struct ParsedExpertName {
  int64_t layer = 0;
  int64_t expert = 0;
  ExpertPart part = ExpertPart::kGate;
};
std::optional<ParsedExpertName> ParseExpertName(ModelFamily family, std::string_view name);

// Where an expert tensor lives in a checkpoint that stores the experts fused (granitemoe): elements
// [offset, offset + count) of tensor `name` (shape `fused_shape`), row-major. nullopt for families whose
// checkpoints name each expert's tensors (ExpertName).
struct FusedSlice {
  std::string name;
  std::vector<int64_t> fused_shape;
  int64_t offset = 0;
  int64_t count = 0;
};
std::optional<FusedSlice> FusedExpertSource(const ModelConfig& config, int64_t layer, int64_t expert,
                                            ExpertPart part);
// Same from a parameter name; nullopt when `name` is not a fused family's expert tensor.
std::optional<FusedSlice> FusedExpertSource(const ModelConfig& config, std::string_view name);

}  // namespace tessera::hf
