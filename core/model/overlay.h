// ExpertOverlay: a tenant's own weights for a few expert slots (layer, expert).
//
// In the forward pass, a sequence carrying an overlay uses the overlay's weights for every slot the
// overlay holds and the base model's for all others (the router stays the base router).
//
// Memory/identity contract: an overlay is immutable once built and shared as
// std::shared_ptr<const ExpertOverlay>; it owns only the tensors of its own slots (nothing
// proportional to the model or to other overlays). `digest()` identifies the content (for caches):
// by default a 128-bit non-cryptographic hash of the slot names and weights; callers that know a
// stronger identity (the registry's blob sha256) pass it in. Trainers may build an overlay with
// FromWeights() and update its tensors in place between steps while they are its only user.
//
// Serialized form: a safetensors blob holding exactly the overlay's slots, three tensors per slot
// under the family's HF expert names (hf_names.h), f32; so merging it into the backbone's
// model.safetensors gives a plain HF checkpoint.
//
// Precision: an overlay's tensors are all of one dtype(), f32 or bf16; a model serves an overlay only
// in its own matrix dtype (ModelWeights::matrix_dtype()). The digest and the serialized blob are of
// the f32 values (exact for bf16), so a bf16 copy of a blob keeps its registry identity.
#pragma once

#include <array>
#include <compare>
#include <functional>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/weights.h"

namespace tessera {

struct SlotId {
  int32_t layer = 0;
  int32_t expert = 0;
  auto operator<=>(const SlotId&) const = default;
  bool operator==(const SlotId&) const = default;
  std::string ToString() const;  // "L3.E7"
};

// OUT_OF_RANGE-style check shared by everything taking slots: INVALID_ARGUMENT naming the slot.
absl::Status ValidateSlot(const ModelConfig& config, SlotId slot);

// Where FromSafetensors puts a slot's three tensors (shapes ExpertPartShape, the overlay's dtype, on
// the backend's device; contents are overwritten). Unset: fresh backend allocations. The runtime passes
// its preallocated slab pool here (core/runtime/overlay_slab_pool.h).
using SlotAllocator = std::function<absl::StatusOr<ExpertWeights>()>;

class ExpertOverlay {
 public:
  // Parses and validates a safetensors blob: every tensor must be an expert tensor of the config's
  // family with the slot in range and the right shape, and every slot must have all three parts.
  // Errors (INVALID_ARGUMENT / the safetensors reader's) name the tensor. `digest` empty = computed.
  // The tensors are stored on the backend as `dtype` (f32 or bf16; bf16 rounds to nearest even).
  static absl::StatusOr<std::shared_ptr<const ExpertOverlay>> FromSafetensors(
      const ModelConfig& config, std::string bytes, Backend* backend, std::string digest = "",
      DType dtype = DType::kF32, const SlotAllocator& allocate_slot = nullptr);
  // Wraps existing tensors (shared, not copied); validates slots, shapes and that every tensor has
  // the same dtype (f32 or bf16).
  static absl::StatusOr<std::shared_ptr<const ExpertOverlay>> FromWeights(
      const ModelConfig& config, std::map<SlotId, ExpertWeights> slots, Backend* backend,
      std::string digest = "");
  // Deep copies of the base experts for `slots` (the starting point of a fine-tune), in the base's
  // matrix dtype.
  static absl::StatusOr<std::shared_ptr<const ExpertOverlay>> CopyOfBase(
      const ModelConfig& config, const ModelWeights& base, absl::Span<const SlotId> slots,
      Backend* backend);

  // The safetensors blob described above, with `metadata` as its "__metadata__".
  absl::StatusOr<std::string> Serialize(const std::map<std::string, std::string>& metadata = {}) const;

  // The overlay's weights for `slot`, or nullptr when the overlay does not hold it.
  const ExpertWeights* Find(SlotId slot) const;
  bool Has(SlotId slot) const { return Find(slot) != nullptr; }
  const std::map<SlotId, ExpertWeights>& slots() const { return slots_; }
  std::vector<SlotId> SlotIds() const;
  const std::string& digest() const { return digest_; }
  int64_t bytes() const;  // bytes of the slots' tensors
  DType dtype() const { return dtype_; }
  const ModelConfig& config() const { return config_; }

 private:
  ExpertOverlay() = default;
  absl::StatusOr<std::string> ComputeDigest() const;

  ModelConfig config_;
  Backend* backend_ = nullptr;
  std::map<SlotId, ExpertWeights> slots_;
  std::string digest_;
  DType dtype_ = DType::kF32;
};

}  // namespace tessera
