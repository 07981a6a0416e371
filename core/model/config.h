// ModelConfig: the architecture of a Llama-style MoE decoder, read from (and written to) an HF
// `config.json` for model_type "mixtral", "qwen3_moe" and "olmoe".
//
// Every layer is: x += o_proj(attn(rope(qk_norm(q_proj(n1))), ...)) with n1 = rmsnorm(x), then
// x += sum_k w_k * expert_k(rmsnorm(x)) over the router's top-k experts (SwiGLU experts, no shared
// expert, every layer sparse). What differs per family:
//   mixtral   : no q/k norm; top-k weights always renormalized; expert width = intermediate_size;
//               experts = num_local_experts.
//   qwen3_moe : per-head RMSNorm of q and k over head_dim (weights [head_dim]); norm_topk_prob;
//               expert width = moe_intermediate_size; experts = num_experts.
//   olmoe     : RMSNorm over the whole q projection ([heads*head_dim]) and k projection
//               ([kv_heads*head_dim]); norm_topk_prob (HF default false); expert width =
//               intermediate_size; experts = num_experts.
// Unsupported features (sliding window, rope_scaling, attention bias, shared experts, dense layers,
// qkv clipping, non-silu activations) are rejected with UNIMPLEMENTED naming the field; missing or
// inconsistent fields give INVALID_ARGUMENT naming the field.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera {

enum class ModelFamily { kMixtral, kQwen3Moe, kOlmoe };
// How q and k are normalized before RoPE.
enum class QkNorm {
  kNone,     // mixtral
  kPerHead,  // qwen3_moe: RMSNorm over each head's head_dim, weight [head_dim]
  kFull,     // olmoe: RMSNorm over the whole projection, weight [heads * head_dim]
};

const char* ModelFamilyName(ModelFamily family);  // the HF model_type string

struct ModelConfig {
  ModelFamily family = ModelFamily::kQwen3Moe;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t num_experts = 0;
  int64_t top_k = 0;
  int64_t expert_dim = 0;  // each expert's intermediate width F
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 4096;
  bool norm_topk_prob = true;
  bool tie_word_embeddings = false;
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.0f;
  QkNorm qk_norm = QkNorm::kPerHead;

  // Parses an HF config.json text. See the file comment for the errors.
  static absl::StatusOr<ModelConfig> FromJson(std::string_view json);
  // Reads `path` (a config.json file, or a directory holding one).
  static absl::StatusOr<ModelConfig> FromFile(const std::string& path);
  // An HF-compatible config.json (transformers can load it for the same family).
  std::string ToJson() const;
  // Consistency checks shared by FromJson and hand-built configs (INVALID_ARGUMENT naming the field).
  absl::Status Validate() const;

  // builtin:tiny: qwen3_moe family, byte vocabulary (259 ids padded to 264 rows), hidden 192, 4 layers,
  // 6/2 heads of 32, 16 experts of width 96, top-4, tied embeddings: ~4.0M parameters.
  static ModelConfig BuiltinTiny();
  // The bench's 'small' config: hidden 1024, 8 layers, 16/4 heads of 64, 32 experts of 512, top-4,
  // vocab 32000 (untied).
  static ModelConfig BuiltinSmall();
  // "builtin:tiny" / "builtin:small" -> the config; NOT_FOUND otherwise.
  static absl::StatusOr<ModelConfig> Builtin(std::string_view name);

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  // Total parameter count (lm_head counted once when tied).
  int64_t NumParameters() const;
  // Parameters of one expert slot (gate + up + down).
  int64_t ExpertParameters() const { return 3 * hidden_size * expert_dim; }

  bool operator==(const ModelConfig&) const = default;
};

}  // namespace tessera
