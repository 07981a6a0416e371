// ModelWeights: every parameter of the decoder, as tensors on one backend, in HF layouts
// (nn.Linear weights are [out_features, in_features]).
//
// Precision: the weight matrices (every rank-2 tensor: embedding, projections, router, experts, LM
// head) share one dtype, matrix_dtype(): f32 (loading, training, the CPU backend) or bf16 (the CUDA
// backend's tensor-core path, WithMatrixDtype). Norm weights (rank 1) are always f32.
//
// Memory contract: tensors are shared-owner handles (core/tensor/tensor.h). When
// tie_word_embeddings is set, `lm_head` is the same tensor as `embed` (one allocation), and it is
// listed once (as the embedding) by Parameters(). Copying a ModelWeights copies handles, not data.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/backend/backend.h"
#include "core/model/config.h"

namespace tessera {

class ExpertOverlay;

namespace io {
class Checkpoint;
}  // namespace io

// One expert's SwiGLU weights: down(silu(gate x) * up x).
struct ExpertWeights {
  Tensor gate;  // [F, D]
  Tensor up;    // [F, D]
  Tensor down;  // [D, F]
};

struct LayerWeights {
  Tensor input_norm;  // [D]
  Tensor q_proj;      // [H*hd, D] (MLA with q_lora_rank: q_b_proj [H*hd, q_lora_rank])
  Tensor k_proj;      // [KVH*hd, D]; undefined with MLA
  Tensor v_proj;      // [KVH*hd, D]; undefined with MLA
  Tensor o_proj;      // [D, H*hd] (MLA: [D, H*v_head_dim])
  // Multi-head latent attention (config.mla(); mla_attention.h); undefined otherwise.
  Tensor q_a_proj;    // [q_lora_rank, D] (q_lora_rank > 0)
  Tensor q_a_norm;    // [q_lora_rank]
  Tensor kv_a_proj;   // [kv_lora_rank + qk_rope_head_dim, D] (kv_a_proj_with_mqa)
  Tensor kv_a_norm;   // [kv_lora_rank]
  Tensor kv_b_proj;   // [H*(qk_nope_head_dim + v_head_dim), kv_lora_rank]
  Tensor q_norm;      // [hd] (per-head) or [H*hd] (full); undefined without q/k norm
  Tensor k_norm;      // [hd] or [KVH*hd]; undefined without q/k norm
  Tensor post_norm;   // [D]
  Tensor router;      // [E, D]; undefined in a dense layer
  std::vector<ExpertWeights> experts;  // E entries; none in a dense layer
  Tensor q_bias;      // [H*hd] with qkv_bias; undefined otherwise
  Tensor k_bias;      // [KVH*hd] with qkv_bias
  Tensor v_bias;      // [KVH*hd] with qkv_bias
  // The always-on SwiGLU MLP of width config.MlpDim(layer): a sparse layer's shared expert, or a dense
  // layer's whole MLP; undefined tensors when the width is 0.
  ExpertWeights mlp;
  Tensor shared_gate;  // [1, D] with shared_expert_gate (sparse layers only)
  Tensor router_bias;  // [E] f32 with config.router_bias (sparse layers only): selection bias, not a weight
};

// A parameter with its HF name; `tensor` points into the ModelWeights it came from.
struct NamedParam {
  std::string name;
  Tensor* tensor = nullptr;
};

// Shapes of a slot's expert tensors: gate/up [F, D], down [D, F].
std::vector<int64_t> ExpertPartShape(const ModelConfig& config, int part /*0 gate,1 up,2 down*/);

// One slot's three tensors in `dtype` on `backend`, uninitialized.
absl::StatusOr<ExpertWeights> AllocateExpertWeights(const ModelConfig& config, DType dtype, Backend* backend);

struct ModelWeights {
  Tensor embed;       // [V, D]
  std::vector<LayerWeights> layers;
  Tensor final_norm;  // [D]
  Tensor lm_head;     // [V, D]; same tensor as `embed` when tied

  // Allocates every tensor of `config` (uninitialized contents) on `backend`: matrices (rank 2) in
  // `matrix_dtype` (f32 or bf16), norm weights in f32.
  static absl::StatusOr<ModelWeights> Allocate(const ModelConfig& config, Backend* backend,
                                               DType matrix_dtype = DType::kF32);
  // OK when every tensor exists with the config's shape on `device`, matrices in `matrix_dtype` and
  // norm weights in f32 (INVALID_ARGUMENT naming the tensor otherwise). Allocates nothing.
  absl::Status CheckShapes(const ModelConfig& config, DeviceKind device,
                           DType matrix_dtype = DType::kF32) const;
  // The dtype of the weight matrices (the embedding's); f32 when empty.
  DType matrix_dtype() const { return embed.defined() ? embed.dtype() : DType::kF32; }
  // A copy whose matrices are `dtype` (f32 or bf16), converted on `backend` (f32 -> bf16 rounds to
  // nearest even); norm weights and matrices already in `dtype` are shared handles, not copies. The
  // tie between embed and lm_head is kept. INVALID_ARGUMENT for another dtype.
  absl::StatusOr<ModelWeights> WithMatrixDtype(const ModelConfig& config, DType dtype, Backend* backend) const;
  // Reads every tensor by its HF name straight into its serving dtype: matrices in `matrix_dtype` (f32
  // or bf16), norm weights in f32, whatever the stored dtype (F32/BF16/F16; narrowing rounds to nearest
  // even, as WithMatrixDtype does). Memory: tensor by tensor, in pieces of at most kLoadPieceBytes (a
  // stored dtype equal to the serving one is copied from the file mapping without any host staging,
  // another is converted piece by piece), and each piece's mapped pages are released once copied, so
  // a load's peak host memory is the weights (on a CPU backend) plus about one piece -- never an f32
  // copy of the model nor the whole file resident. A missing tensor is NOT_FOUND naming it (and, for a
  // sharded checkpoint, the index); a shape mismatch INVALID_ARGUMENT naming the tensor, its shard and
  // both shapes. With tied embeddings a stored lm_head.weight is ignored (HF does the same).
  static absl::StatusOr<ModelWeights> Load(const ModelConfig& config, const io::Checkpoint& ckpt,
                                           Backend* backend, DType matrix_dtype = DType::kF32);
  // io::Checkpoint::Open(path) then Load.
  static absl::StatusOr<ModelWeights> LoadFromPath(const ModelConfig& config, const std::string& path,
                                                   Backend* backend, DType matrix_dtype = DType::kF32);
  static constexpr size_t kLoadPieceBytes = size_t{8} << 20;
  // Deterministic random init for `seed` (HF-style: linear/embedding weights ~ N(0, 0.02^2), scaled
  // down by 1/sqrt(2 * layers) for o_proj and expert down projections; norm weights 1).
  static absl::StatusOr<ModelWeights> RandomInit(const ModelConfig& config, uint64_t seed,
                                                 Backend* backend);

  // Every parameter with its HF name, in a fixed order (embed, per layer..., final norm, lm_head
  // unless tied). Pointers stay valid as long as this object is not moved.
  std::vector<NamedParam> Parameters(const ModelConfig& config);

  // Writes `path` (model.safetensors layout, f32, HF names) with `metadata`.
  absl::Status Save(const ModelConfig& config, Backend* backend, const std::string& path,
                    const std::map<std::string, std::string>& metadata = {}) const;

  // The backbone with `overlay`'s slots in place of the base experts, sharing every tensor (no copy):
  // Save() of the result is the tenant's version as a plain HF checkpoint. The overlay must have been
  // built for the same config (INVALID_ARGUMENT otherwise).
  absl::StatusOr<ModelWeights> MergedWith(const ModelConfig& config, const ExpertOverlay& overlay) const;

  // A deep f32 copy on the same backend (e.g. the trainer's full fine-tune starting point).
  absl::StatusOr<ModelWeights> Clone(const ModelConfig& config, Backend* backend) const;
};

}  // namespace tessera
