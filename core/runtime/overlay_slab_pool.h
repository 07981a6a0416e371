// OverlaySlabPool: device memory for tenant overlays, allocated once at startup and carved into equal
// slabs, one expert slot (gate [F,D], up [F,D], down [D,F] in the model's dtype) per slab.
//
// Why: an overlay load then never asks the device allocator for memory while serving (no allocation
// stalls or fragmentation next to the KV caches and activations), and the memory tenants can occupy is
// fixed up front. Loading a version takes one slab per slot; when the last holder of the overlay drops
// it (the cache evicted it and no request still uses it), its slabs return to the pool.
//
// Memory contract: Create() makes ONE backend allocation of slabs * slab_bytes(). Acquire() hands out
// ExpertWeights whose three tensors are views into one slab; the slab stays taken while any of those
// tensors (or views of them) exists, and returns to the pool when the last one goes. The pool's state
// lives as long as any slab is out, so the pool object may be destroyed first.
// Thread-safety: Acquire and the counters are thread-safe; slabs return from any thread.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/weights.h"

namespace tessera::runtime {

class OverlaySlabPool {
 public:
  // INVALID_ARGUMENT for slabs < 1 or a dtype other than f32/bf16; the backend's error (e.g.
  // RESOURCE_EXHAUSTED) when the allocation fails.
  static absl::StatusOr<std::unique_ptr<OverlaySlabPool>> Create(const ModelConfig& config, DType dtype,
                                                                 int64_t slabs, Backend* backend);
  ~OverlaySlabPool();

  // One slot's tensors in a free slab (contents undefined), or RESOURCE_EXHAUSTED when every slab is out.
  absl::StatusOr<ExpertWeights> Acquire();

  int64_t slabs() const;
  int64_t slabs_in_use() const;
  int64_t slab_bytes() const;
  // Bytes of one slot in `dtype` for `config` (the slab size).
  static int64_t SlotBytes(const ModelConfig& config, DType dtype);

 private:
  struct State;
  explicit OverlaySlabPool(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

}  // namespace tessera::runtime
