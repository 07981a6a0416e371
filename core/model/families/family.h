// The table of supported model families: one FamilyDescriptor per HF model_type (one file each in
// this directory, listed in family_table.cc). A descriptor is data: the family's config.json keys, how
// its family-specific fields map onto ModelConfig's features (refusing unsupported ones by name), and
// its checkpoint tensor names. Nothing outside config.cc / hf_names.cc / weights' name resolution
// looks at the family; the model computes from ModelConfig's features.
//
// Private to core/model (it exposes nlohmann::json).
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "core/model/config.h"
#include "nlohmann/json.hpp"

namespace tessera::families {

using Json = nlohmann::json;

// Checkpoint names of one layer's MLP-block tensors, relative to "model.layers.{l}.".
struct TensorNames {
  const char* moe = "mlp";                // prefix of the router and the experts
  const char* router = "gate.weight";     // under `moe`
  const char* router_bias = "gate.e_score_correction_bias";  // under `moe` (router_bias configs)
  const char* parts[3] = {"gate_proj", "up_proj", "down_proj"};  // per-expert: experts.{e}.{part}.weight
  const char* shared = nullptr;           // shared expert MLP prefix ("mlp.shared_expert"); nullptr: none
  const char* shared_gate = nullptr;      // the shared expert's gate weight [1, D]
  const char* dense = "mlp";              // a dense layer's MLP prefix: {dense}.{gate,up,down}_proj.weight
  // Experts stored fused (granitemoe): {moe}.input_linear.weight [E, 2F, D] (rows [0, F) gate, [F, 2F)
  // up) and {moe}.output_linear.weight [E, D, F]. The per-expert names above are then Tessera's own
  // canonical names for one expert's slices (overlays, gradients); loading slices the fused tensors and
  // saving writes them fused again.
  const char* fused_gate_up = nullptr;
  const char* fused_down = nullptr;
};

struct FamilyDescriptor {
  ModelFamily family;
  const char* model_type;    // HF config.json "model_type"
  const char* architecture;  // HF "architectures"[0]
  const char* experts_key;   // the expert count's key (the other alias is accepted too)
  const char* expert_width_key;
  TensorNames names;
  // Reads the family's own fields into `c` (the common ones are parsed already); refuses unsupported
  // fields with UNIMPLEMENTED naming them.
  absl::Status (*parse)(const Json& j, ModelConfig* c);
  // Writes the family's own fields (the common ones are written by ModelConfig::ToJson).
  void (*write)(const ModelConfig& c, Json* j);
};

const FamilyDescriptor& Family(ModelFamily family);
const FamilyDescriptor* FindFamily(std::string_view model_type);  // nullptr when unsupported
std::string SupportedModelTypes();                                 // "mixtral, qwen3_moe, ..."

extern const FamilyDescriptor kMixtralFamily;
extern const FamilyDescriptor kQwen3MoeFamily;
extern const FamilyDescriptor kOlmoeFamily;
extern const FamilyDescriptor kQwen2MoeFamily;
extern const FamilyDescriptor kGraniteMoeFamily;
extern const FamilyDescriptor kDots1Family;
extern const FamilyDescriptor kDeepseekV3Family;
extern const FamilyDescriptor kDeepseekV2Family;

// Shared by deepseek_v2 and deepseek_v3 (deepseek_v3.cc): multi-head latent attention's fields
// (q_lora_rank, kv_lora_rank, qk_nope/rope_head_dim, v_head_dim), and the MoE
// layout (routed_scaling_factor, n_shared_experts, first_k_dense_replace / intermediate_size).
absl::Status ParseMla(const Json& j, ModelConfig* c);
void WriteMla(const ModelConfig& c, Json* j);
// Defaults of the layout fields when absent (those of transformers' config class).
struct DeepseekDefaults {
  int64_t n_shared_experts;
  int64_t first_k_dense_replace;
  double routed_scaling_factor;
};
absl::Status ParseDeepseekMoeLayout(const Json& j, const DeepseekDefaults& def, ModelConfig* c);
// The fields ParseDeepseekMoeLayout reads, plus the expert count/width, n_group/topk_group and
// attention_bias (false), as the DeepSeek-style families (dots1, deepseek_v2, deepseek_v3) write them.
void WriteDeepseekMoeLayout(const ModelConfig& c, Json* j);

// ---- config.json field helpers shared by the parsers (errors name the field) ----------------------
absl::Status Missing(std::string_view field);
absl::Status BadType(std::string_view field, std::string_view want);
absl::Status Unsupported(std::string_view field, std::string_view why);
bool Present(const Json& j, const char* key);
absl::StatusOr<int64_t> GetInt(const Json& j, const char* key);
absl::StatusOr<int64_t> GetIntOr(const Json& j, const char* key, int64_t def);
absl::StatusOr<double> GetNumberOr(const Json& j, const char* key, double def);
// A number stored as float: refused (naming the field) when a float cannot hold it, e.g. 1e308, which
// would become inf and be written back as null.
absl::StatusOr<float> GetFloatOr(const Json& j, const char* key, float def);
absl::StatusOr<bool> GetBoolOr(const Json& j, const char* key, bool def);
// Refuses `key` when present and true (a boolean feature that is not supported).
absl::Status RefuseTrue(const Json& j, const char* key, std::string_view what);
// Refuses `key` when present and not null.
absl::Status RefuseSet(const Json& j, const char* key, std::string_view what);

// rope_scaling / rope_parameters (rope_scaling.cc): UNIMPLEMENTED naming the field for unsupported types.
absl::Status ParseRopeScaling(const Json& j, int64_t max_position_embeddings, RopeScaling* out);
void WriteRopeScaling(const ModelConfig& c, Json* j);

}  // namespace tessera::families
