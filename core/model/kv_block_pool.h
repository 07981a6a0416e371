// KvBlockPool: paged KV memory. One pool of fixed-size blocks (block_tokens positions each, every layer's
// K and V) from which paged KvCaches (kv_cache.h) take blocks as their sequences grow and to which they
// return them when reset, so long and short sequences share one budget instead of each holding a slab of
// the maximum context.
//
// Memory contract: Create allocates, on the backend, per layer one K and one V tensor of
// [num_blocks * block_tokens, KVH, head_dim] in `dtype` (2 * layers * num_blocks * block_tokens * KVH *
// head_dim * sizeof(dtype) bytes = num_blocks * block_bytes()); nothing is allocated afterwards. Block b
// is storage rows [b * block_tokens, (b + 1) * block_tokens) of every layer's K and V. A freed block's
// contents are garbage and never read: a cache reads only positions below its length, which it wrote.
// Thread-safety: Allocate/Free/free_blocks are thread-safe; the tensors are written only through the
// caches that own the blocks (one Forward at a time per cache, kv_cache.h).
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

class KvBlockPool {
 public:
  // num_blocks >= 1, block_tokens >= 1; dtype f32 or bf16 (as KvCache::Create).
  static absl::StatusOr<std::unique_ptr<KvBlockPool>> Create(const ModelConfig& config, int64_t num_blocks,
                                                             int64_t block_tokens, Backend* backend,
                                                             DType dtype = DType::kF32);

  // Appends `n` free block ids to `out` and returns true, or takes none and returns false when fewer
  // than `n` are free.
  bool Allocate(int64_t n, std::vector<int32_t>* out);
  void Free(absl::Span<const int32_t> blocks);

  // Blocks of `block_tokens` positions that hold `positions` positions (ceil).
  static int64_t BlocksFor(int64_t positions, int64_t block_tokens) {
    return (positions + block_tokens - 1) / block_tokens;
  }

  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_tokens() const { return block_tokens_; }
  int64_t free_blocks() const;
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
  int64_t num_blocks_ = 0;
  int64_t block_tokens_ = 0;
  int64_t block_bytes_ = 0;
  DType dtype_ = DType::kF32;
  std::vector<Tensor> k_, v_;
  mutable std::mutex mu_;
  std::vector<int32_t> free_;  // a stack: the most recently freed block is reused first
};

}  // namespace tessera
