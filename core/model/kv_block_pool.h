// KvBlockPool: paged KV memory. One pool of fixed-size blocks (block_tokens positions each, every layer's
// K and V) from which paged KvCaches (kv_cache.h) take blocks as their sequences grow and to which they
// return them when reset, so long and short sequences share one budget instead of each holding a slab of
// the maximum context.
//
// Sharing: a block is reference-counted. Allocate hands out blocks with one reference, Share adds one,
// Free drops one, and a block is free again when its last reference goes. The prefix cache
// (core/runtime/prefix_cache.h) keeps references to blocks of computed prompts and hands them to later
// requests' caches, so one system prompt's KV is stored once however many sequences read it. A shared
// block is read-only: a cache about to write into one copies it first (KvCache::Reserve, CopyOnWrite).
// Reclaiming: a pool may have a KvBlockReclaimer (the prefix cache), which holds references it can drop
// on demand. Allocate asks it for blocks when too few are free, and available_blocks() counts them, so
// cached prompts use memory only while running sequences do not need it. The reclaimer takes and drops its
// references as KvBlockHolder::kReclaimer, so the pool keeps the count of blocks only the reclaimer holds
// up to date as references change: available_blocks() is O(1) (admission asks it for every waiting
// request on every step).
//
// Memory contract: Create allocates, on the backend, per layer one K and one V tensor of
// [num_blocks * block_tokens, KVH, head_dim] in `dtype` (2 * layers * num_blocks * block_tokens * KVH *
// head_dim * sizeof(dtype) bytes = num_blocks * block_bytes()); nothing is allocated afterwards. Block b
// is storage rows [b * block_tokens, (b + 1) * block_tokens) of every layer's K and V. A freed block's
// contents are garbage and never read: a cache reads only positions below its length, which it wrote or
// took from a shared block holding exactly those positions' keys/values.
// Thread-safety: every method is thread-safe. The pool never calls its reclaimer while holding its own
// lock, so the reclaimer may call Free (lock order: the reclaimer's lock, then the pool's). The tensors
// are written only through the caches that hold the blocks (one Forward at a time per cache, kv_cache.h;
// the runtime serializes backend use), and CopyOnWrite's copy runs on the caller's backend turn.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/backend/backend.h"
#include "core/model/config.h"

namespace tessera {

// Something holding pool blocks it can give back on demand (the prefix cache's cached prompts). It holds
// at most one reference per block, taken with Share(..., KvBlockHolder::kReclaimer).
class KvBlockReclaimer {
 public:
  virtual ~KvBlockReclaimer() = default;
  // Drops references until `n` blocks became free or nothing more can be dropped; returns the blocks freed.
  virtual int64_t ReclaimBlocks(int64_t n) = 0;
};

// Who takes or drops a reference: a sequence's cache, or the pool's reclaimer.
enum class KvBlockHolder { kSequence, kReclaimer };

class KvBlockPool {
 public:
  // num_blocks >= 1, block_tokens >= 1; dtype f32 or bf16 (as KvCache::Create).
  static absl::StatusOr<std::unique_ptr<KvBlockPool>> Create(const ModelConfig& config, int64_t num_blocks,
                                                             int64_t block_tokens, Backend* backend,
                                                             DType dtype = DType::kF32);

  // Appends `n` free block ids (one reference each) to `out` and returns true, or takes none and returns
  // false when fewer than `n` are free even after asking the reclaimer for the difference.
  bool Allocate(int64_t n, std::vector<int32_t>* out);
  // One more reference to each of `blocks` (every one held by someone: allocated and not yet freed).
  void Share(absl::Span<const int32_t> blocks, KvBlockHolder holder = KvBlockHolder::kSequence);
  // Drops one reference to each, taken by `holder`; a block whose last reference goes is free.
  void Free(absl::Span<const int32_t> blocks, KvBlockHolder holder = KvBlockHolder::kSequence);
  // References to `block` now (0: free).
  int32_t refs(int32_t block) const;
  // A block with the same rows as `block` that the caller holds alone: `block` itself when its only
  // reference is the caller's; otherwise a newly allocated block into which every layer's K and V rows
  // of `block` are copied (on the pool's backend; the caller's reference to `block` is dropped).
  // RESOURCE_EXHAUSTED when no block can be allocated for the copy.
  absl::StatusOr<int32_t> CopyOnWrite(int32_t block);

  // The reclaimer (nullptr: none) must outlive the pool's use or be reset to nullptr first.
  void SetReclaimer(KvBlockReclaimer* reclaimer);

  // Blocks of `block_tokens` positions that hold `positions` positions (ceil).
  static int64_t BlocksFor(int64_t positions, int64_t block_tokens) {
    return (positions + block_tokens - 1) / block_tokens;
  }

  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_tokens() const { return block_tokens_; }
  int64_t free_blocks() const;
  // Blocks whose only reference is the reclaimer's (freed by ReclaimBlocks); O(1).
  int64_t reclaimable_blocks() const;
  // free_blocks() + reclaimable_blocks() (0 reclaimable without a reclaimer): what admission may count on.
  int64_t available_blocks() const;
  int64_t num_layers() const { return static_cast<int64_t>(k_.size()); }
  // Every layer's K and V for one block.
  int64_t block_bytes() const { return block_bytes_; }
  int64_t bytes() const { return num_blocks_ * block_bytes_; }
  DType dtype() const { return dtype_; }

  // [num_blocks * block_tokens, KVH, head_dim] for `layer`.
  const Tensor& k(int64_t layer) const { return k_[layer]; }
  const Tensor& v(int64_t layer) const { return v_[layer]; }

 private:
  KvBlockPool() = default;
  bool TakeLocked(int64_t n, std::vector<int32_t>* out);
  bool ReclaimableLocked(int32_t b) const {
    return refs_[static_cast<size_t>(b)] == 1 && reclaimer_refs_[static_cast<size_t>(b)] == 1;
  }
  // Applies one reference change to block b, keeping reclaimable_ in step.
  void ChangeRefsLocked(int32_t b, int32_t delta, KvBlockHolder holder);

  Backend* backend_ = nullptr;
  int64_t num_blocks_ = 0;
  int64_t block_tokens_ = 0;
  int64_t block_bytes_ = 0;
  DType dtype_ = DType::kF32;
  std::vector<Tensor> k_, v_;
  mutable std::mutex mu_;
  std::vector<int32_t> free_;  // a stack: the most recently freed block is reused first
  std::vector<int32_t> refs_;  // per block; 0 = free
  std::vector<int32_t> reclaimer_refs_;  // per block: of refs_, the reclaimer's (0 or 1)
  int64_t reclaimable_ = 0;              // blocks with ReclaimableLocked
  KvBlockReclaimer* reclaimer_ = nullptr;
};

}  // namespace tessera
