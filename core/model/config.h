// ModelConfig: the architecture of a Llama-style MoE decoder, read from (and written to) an HF
// `config.json`. The supported model_types and what each one's fields mean are data: one descriptor per
// family in core/model/families/ (family.h: the table), so the model code reads features from the
// config (q/k norm, q/k/v bias, shared experts, dense layers, multipliers), never the family.
//
// Every layer is: x += r * o_proj(attn(rope(qk_norm(q_proj(n1) + bq)), ...)) with n1 = rmsnorm(x), then
// the MLP block on n2 = rmsnorm(x):
//   sparse layer: x += r * s * sum_k w_k * expert_k(n2)  [+ r * g * shared(n2)]
//   dense layer : x += r * mlp(n2)
// where experts/shared/mlp are SwiGLU MLPs, w_k the router's top-k weights (renormalized when
// norm_topk_prob), s = routed_scaling_factor, g = sigmoid(n2 . shared_gate) (or 1 without a gate),
// r = residual_multiplier. Embeddings are scaled by embedding_multiplier and logits divided by
// logits_scaling. Families (see families/*.cc for the exact fields):
//   mixtral   : no q/k norm; top-k always renormalized; experts = num_local_experts.
//   qwen3_moe : per-head RMSNorm of q and k; norm_topk_prob; expert width = moe_intermediate_size.
//   olmoe     : RMSNorm over the whole q and k projections; norm_topk_prob.
//   qwen2_moe : q/k/v biases; a shared expert with a sigmoid gate; dense layers (mlp_only_layers,
//               decoder_sparse_step); norm_topk_prob.
//   dots1     : qwen3_moe's attention; DeepSeek-V3's MoE: sigmoid router with e_score_correction_bias
//               and group-limited top-k, routed_scaling_factor, n_shared_experts shared experts (one
//               MLP of n_shared_experts * moe_intermediate_size, no gate), first_k_dense_replace dense layers.
//   deepseek_v3: multi-head latent attention (mla_attention.h) with dots1's MoE (without q/k norm).
//   deepseek_v2: multi-head latent attention with a softmax router (greedy or group-limited top-k by the
//               groups' best score), never renormalized, routed_scaling_factor, shared experts, dense
//               first layers.
//   granitemoe: multipliers (embedding, attention = the softmax scale, residual, logits); fused expert
//               tensors in the checkpoint (input_linear/output_linear), sliced per expert on load.
// RoPE scaling (linear, llama3, yarn) is in rope_scaling.h.
// Sliding-window attention, as transformers 5 applies it: the layers in sliding_layers attend, at
// position p, to keys p - sliding_window < j <= p (the query's own key counted: sliding_window_overlay);
// the others fully. mixtral: every layer when `sliding_window` is set; qwen3_moe: every layer when
// `use_sliding_window`; qwen2_moe: when `use_sliding_window`, the layers `layer_types` marks
// "sliding_attention", or by default layer i when i is even and i < max_window_layers.
// A field that changes the math and is not supported (dynamic RoPE, o_proj bias, qkv
// clipping, non-silu activations, ...) is refused with UNIMPLEMENTED naming the field; missing or
// inconsistent fields give INVALID_ARGUMENT naming the field.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/model/rope_scaling.h"

namespace tessera {

enum class ModelFamily { kMixtral, kQwen3Moe, kOlmoe, kQwen2Moe, kGraniteMoe, kDots1, kDeepseekV3, kDeepseekV2 };
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
  RopeScaling rope_scaling;  // rope_scaling.h; type kNone: the default rotation
  QkNorm qk_norm = QkNorm::kPerHead;
  // q/k/v projections carry biases (qwen2_moe): model.layers.{l}.self_attn.{q,k,v}_proj.bias.
  bool qkv_bias = false;
  // Softmax scale of attention; 0 means 1/sqrt(head_dim) (granitemoe: attention_multiplier).
  float attention_scale = 0.0f;
  float embedding_multiplier = 1.0f;   // h = embed[tokens] * m
  float residual_multiplier = 1.0f;    // every block's output is scaled by it before the residual add
  float logits_scaling = 1.0f;         // logits = lm_head(h) / s
  float routed_scaling_factor = 1.0f;  // the routed experts' sum is scaled by it
  // Shared expert: a SwiGLU MLP of this width every token of a sparse layer passes through (0: none).
  int64_t shared_expert_dim = 0;
  bool shared_expert_gate = false;     // qwen2_moe: scaled by sigmoid(n2 . w), w = [1, D]
  // Dense layers: their MLP is one SwiGLU MLP of width dense_dim (no router, no expert slots).
  std::vector<int64_t> dense_layers;   // sorted layer indices
  int64_t dense_dim = 0;
  // Router scoring. kSoftmax: top-k of softmax(logits). kSigmoid (DeepSeek-V3 style, dots1): scores
  // s = sigmoid(logits); experts are chosen by s + e_score_correction_bias (router_bias) among the
  // topk_group best of n_group equal groups (a group's score: the sum of its two best choice scores);
  // the weights are the chosen s (renormalized when norm_topk_prob). Computed on the host
  // (core/model/host_router.h), as is any routing with groups.
  enum class RouterScoring { kSoftmax, kSigmoid };
  RouterScoring router_scoring = RouterScoring::kSoftmax;
  bool router_bias = false;  // model.layers.{l}.mlp.gate.e_score_correction_bias [E] (f32)
  int64_t n_group = 1;
  int64_t topk_group = 1;
  // Multi-head latent attention (deepseek_v3; mla_attention.h), on when kv_lora_rank > 0. Then
  // head_dim = qk_nope_head_dim + qk_rope_head_dim (the q/k head width), num_kv_heads = num_heads (the
  // cache holds decompressed per-head keys and values), and o_proj is [D, H * v_head_dim].
  int64_t q_lora_rank = 0;  // 0: q = q_proj(x); else q = q_b_proj(rmsnorm(q_a_proj(x)))
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  bool rope_interleave = false;  // the rope part's pairs are (2i, 2i+1) instead of (i, i + half)
  bool mla() const { return kv_lora_rank > 0; }
  // Sliding-window attention (see the file comment): 0 when no layer has a window.
  int64_t sliding_window = 0;
  std::vector<int64_t> sliding_layers;  // sorted layer indices
  // The attention window of `layer` (AttentionSeq::window): 0 for full causal attention.
  int64_t AttentionWindow(int64_t layer) const;
  // The width of o_proj's input: H * v_head_dim with MLA, q_dim() otherwise.
  int64_t o_in_dim() const { return mla() ? num_heads * v_head_dim : q_dim(); }

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
  bool IsDenseLayer(int64_t layer) const;
  // The width of layer `layer`'s always-on MLP: dense_dim for a dense layer, else shared_expert_dim.
  int64_t MlpDim(int64_t layer) const { return IsDenseLayer(layer) ? dense_dim : shared_expert_dim; }
  // The softmax scale before rope scaling: attention_scale (granitemoe's attention_multiplier) when set,
  // else 1/sqrt(head_dim). What config.json states.
  float BaseAttentionScale() const;
  // The scale attention applies: BaseAttentionScale() times yarn's attention factor (see config.cc).
  float AttentionScale() const;
  // Whether routing runs on the host (host_router.h) rather than the backend's RouterForward.
  bool HostRouting() const { return router_scoring != RouterScoring::kSoftmax || n_group > 1; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  // Total parameter count (lm_head counted once when tied).
  int64_t NumParameters() const;
  // Parameters of one expert slot (gate + up + down).
  int64_t ExpertParameters() const { return 3 * hidden_size * expert_dim; }

  bool operator==(const ModelConfig&) const = default;
};

}  // namespace tessera
