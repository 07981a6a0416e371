// LoRA expert versions: the stored form (low-rank factors) and the merge into a servable overlay.
//
// Math: for an expert slot's matrix W [out, in] (gate/up [F, D], down [D, F]) a LoRA version holds
// A [r, in] and B [out, r]; the slot serves
//     W' = W0 + (alpha / r) * B A
// where W0 is the slot's frozen starting point: the dense weights the blob itself carries for the slot
// (a LoRA job continuing from an expert-only version keeps that version's slots densely) or else the
// backbone's base expert.
//
// Stored form (safetensors, self-describing): "__metadata__" has format "tessera-lora-v1",
// lora_rank, lora_alpha (plus the trainer's entries, core/train/lora_trainable.h); tensors, f32:
//   <HF expert name without ".weight">.lora_A.weight  [r, in]     (PEFT's naming, e.g.
//   <HF expert name without ".weight">.lora_B.weight  [out, r]     model.layers.0.mlp.experts.3.gate_proj.lora_A.weight)
//   <HF expert name>                                  [out, in]   a carried dense slot (all three parts)
// A slot with factors has all three parts' A and B. Size: 3 r (D + F) floats per slot against 3 F D
// for a dense slot (F = D = 2048, r = 8: 1/128 of the bytes).
//
// Serving (why merge when loaded): the runtime turns a LoRA blob into dense slot weights ONCE, when the
// version is loaded (LoadVersionOverlay), so it is served through the unchanged overlay path: the same
// grouped GEMM over (slot, overlay) groups, the same slab pool, KV caches and batching, and a LoRA
// version costs exactly what an expert-only version of the same slots costs per token. The alternative,
// applying the delta per token group (y = x W0^T + s (x A^T) B^T, W0 the base expert shared by every
// tenant), would keep only the factors resident (r (in + out) instead of in * out per part) at
// 2 r (in + out) extra FLOPs per token and part; it wins when many tenants' LoRA versions must be
// resident at once and device memory, not compute, bounds them (thousands of adapters of one backbone,
// as S-LoRA/Punica serve). With Tessera's few-overlays-per-device working set the merged form is simpler
// and faster per token.
//
// The merge runs on the serving backend: staging = f32(W0); staging += s * B A (one Matmul with beta 1);
// the slot's tensor = staging in the overlay's dtype (bf16 rounds to nearest even). Every consumer --
// the runtime, a job continuing from the version, an export -- merges with this one function, so they
// agree bitwise on a given backend.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/hf_names.h"
#include "core/model/overlay.h"
#include "core/model/weights.h"

namespace tessera {

inline constexpr char kLoraFormat[] = "tessera-lora-v1";

// "<expert name minus .weight>.lora_A.weight" / ".lora_B.weight".
std::string LoraTensorName(ModelFamily family, int64_t layer, int64_t expert, hf::ExpertPart part, bool is_b);

// One matrix's factors on the host, row-major f32: a [r, in], b [out, r].
struct LoraFactors {
  std::vector<float> a;
  std::vector<float> b;
};

// A LoRA version's content on the host.
struct LoraAdapter {
  int64_t rank = 0;
  double alpha = 0;
  std::map<SlotId, std::array<LoraFactors, 3>> factors;       // gate, up, down
  std::map<SlotId, std::array<std::vector<float>, 3>> dense;  // carried dense slots (W0 of those slots)
  std::map<std::string, std::string> metadata;                // the blob's (Parse) / extra entries (Serialize)

  float scale() const { return rank > 0 ? static_cast<float>(alpha / static_cast<double>(rank)) : 0.0f; }
  std::vector<SlotId> SlotIds() const;  // every slot the version overrides (factors or dense), sorted

  // INVALID_ARGUMENT naming the tensor (or metadata key) for a blob that is not a well-formed LoRA
  // version of `config`'s family and shapes; safetensors errors pass through.
  static absl::StatusOr<LoraAdapter> Parse(const ModelConfig& config, std::string bytes);
  // The dense slots of an expert-only overlay as a LoRA adapter's carried slots (no factors).
  static absl::StatusOr<LoraAdapter> FromDenseOverlay(const ExpertOverlay& overlay, Backend* backend,
                                                      int64_t rank, double alpha);
  // The stored form above; `metadata` entries are added to (and overridden by) format/rank/alpha.
  absl::StatusOr<std::string> Serialize(const ModelConfig& config,
                                        const std::map<std::string, std::string>& metadata = {}) const;
  int64_t FactorElements() const;  // sum of every A and B's elements
};

// The "format" of a safetensors blob's "__metadata__" ("" when absent or not parseable). Reads only the
// header.
std::string SafetensorsFormat(std::string_view bytes);
inline bool IsLoraBlob(std::string_view bytes) { return SafetensorsFormat(bytes) == kLoraFormat; }

// out = W0 + scale * B A, through an f32 `staging` tensor of out's numel (any shape): the one merge
// formula (see the file comment). a [r, in], b [out, r] f32 on `backend`; w0 and out any float dtype.
absl::Status MergeLoraPart(Backend* backend, const Tensor& w0, const Tensor& a, const Tensor& b, float scale,
                           Tensor& staging, Tensor& out);

// The servable overlay of a LoRA adapter over `base` (the backbone's weights): every slot the adapter
// overrides, merged as above, in `dtype`, on `backend` (slots placed by `allocate_slot` when given).
absl::StatusOr<std::shared_ptr<const ExpertOverlay>> MergeLoraAdapter(
    const ModelConfig& config, const LoraAdapter& adapter, const ModelWeights& base, Backend* backend,
    std::string digest = "", DType dtype = DType::kF32, const SlotAllocator& allocate_slot = nullptr);

// The overlay a stored version serves: an expert-only blob parsed as is (ExpertOverlay::FromSafetensors),
// a LoRA blob merged once (needs `base`: FAILED_PRECONDITION when it is null).
absl::StatusOr<std::shared_ptr<const ExpertOverlay>> LoadVersionOverlay(
    const ModelConfig& config, std::string bytes, const ModelWeights* base, Backend* backend,
    std::string digest = "", DType dtype = DType::kF32, const SlotAllocator& allocate_slot = nullptr);

// An expert-only blob of the same slots with the merged weights (f32, HF expert names), metadata kept
// with format "tessera-expert-overlay-v1" and "merged_from": "tessera-lora-v1"; a blob that is not LoRA is
// returned unchanged. For exports (a merged checkpoint takes dense expert tensors).
absl::StatusOr<std::string> MergedOverlayBlob(const ModelConfig& config, std::string bytes,
                                              const ModelWeights& base, Backend* backend);

}  // namespace tessera
