// KvCache: one sequence's keys and values for every layer, for incremental decoding.
//
// Two layouts, one interface:
//   contiguous (Create): K and V of [capacity, KVH, head_dim] per layer, allocated up front on the
//     model's backend in `dtype` (f32, or bf16 on the CUDA backend: 2 * layers * capacity * KVH *
//     head_dim * sizeof(dtype) bytes; see bytes()); nothing is allocated later. Position p is storage
//     row p. The single-request paths (generate.h, tests, benchmarks) use it.
//   paged (CreatePaged): positions live in blocks of a shared KvBlockPool (kv_block_pool.h), taken on
//     demand by Reserve (Model::Forward reserves what it appends) and returned by Reset or destruction.
//     Position p is storage row blocks()[p / B] * B + p % B of the pool's tensors, B = block_tokens().
//     capacity() is only the sequence's maximum length; the pool's free blocks bound it in practice.
//     Blocks may be shared with other caches and the prefix cache (AdoptBlocks; kv_block_pool.h): before
//     positions are written, Reserve gives the cache its own copy of every shared block at or after
//     length() (copy-on-write), so a shared block is never written.
// Positions [0, length()) hold valid keys/values (post-RoPE, post-norm); rows beyond are garbage.
//
// Model::Forward appends a sequence's new tokens at position length() and advances length() only
// when the whole forward succeeds; a forward that would exceed capacity(), or for which a paged
// cache's pool has no blocks left, fails with RESOURCE_EXHAUSTED without writing the cache (a paged
// cache may keep blocks reserved by such a call; the next Reserve counts them). One cache serves one
// sequence; a cache must not appear twice in one batch, nor be used by two Forward calls at once.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/kv_block_pool.h"

namespace tessera {

// Positions [position, position + count) of a cache, stored in rows [row, row + count) of its k()/v().
struct KvSegment {
  int64_t position = 0;
  int64_t row = 0;
  int64_t count = 0;
};

class KvCache {
 public:
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(const ModelConfig& config, int64_t capacity,
                                                         Backend* backend, DType dtype = DType::kF32);
  // A paged cache over `pool` (which must outlive it) holding no blocks yet; capacity >= 1 positions.
  static absl::StatusOr<std::unique_ptr<KvCache>> CreatePaged(KvBlockPool* pool, int64_t capacity);
  ~KvCache();
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  // Bytes one position takes across every layer's K and V: what Create allocates per unit of capacity
  // (the KV memory budget divides by this; see core/runtime/context_plan.h).
  static int64_t BytesPerPosition(const ModelConfig& config, DType dtype);

  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  // Bytes this cache holds: its allocation (contiguous) or its blocks (paged).
  int64_t bytes() const;
  // Forget every position; a contiguous cache keeps its memory, a paged one returns its blocks.
  void Reset();
  // Keep positions [0, new_length) (and every reserved block); INVALID_ARGUMENT if new_length > length()
  // or < 0.
  absl::Status Truncate(int64_t new_length);
  // Marks positions [length(), new_length) valid after the caller wrote them through Segments() views of
  // k()/v() (Tensor::Rows) with keys/values this model computed for the same tokens and overlay (after
  // Reserve, which makes those blocks the cache's own). INVALID_ARGUMENT if new_length < length() or >
  // reserved().
  absl::Status Extend(int64_t new_length);
  // Prefix reuse (core/runtime/prefix_cache.h): an empty paged cache (length 0, no blocks) takes over one
  // reference to each of `blocks` (taken by the caller with KvBlockPool::Share), which hold this model's
  // keys/values for positions [0, length) under the same tokens and overlay; length becomes `length`.
  // INVALID_ARGUMENT (and the references are dropped) for a contiguous or non-empty cache, or a length
  // beyond the blocks or the capacity.
  absl::Status AdoptBlocks(std::vector<int32_t> blocks, int64_t length);

  bool paged() const { return pool_ != nullptr; }
  // The pool a paged cache takes its blocks from (nullptr: contiguous).
  const KvBlockPool* pool() const { return pool_; }
  // Positions that have storage now: capacity() (contiguous) or blocks * block_tokens (paged).
  int64_t reserved() const;
  // Storage for positions [0, positions), writable from length() on: a paged cache first replaces each
  // shared block it holds at or after position length() by its own copy (KvBlockPool::CopyOnWrite), then
  // takes the blocks it lacks from its pool, all or none (RESOURCE_EXHAUSTED naming the numbers when the
  // pool has too few free); INVALID_ARGUMENT beyond capacity(). A contiguous cache only checks capacity().
  absl::Status Reserve(int64_t positions);
  // The shared blocks the next Reserve copies before any write (0 for a contiguous cache): admission
  // counts them as blocks the next step needs.
  int64_t BlocksToCopyBeforeWrite() const;
  // The storage rows of positions [begin, end) (end <= reserved()), in position order, one segment per
  // block touched (one in all for a contiguous cache).
  std::vector<KvSegment> Segments(int64_t begin, int64_t end) const;
  // Paged: the block table (block i holds positions [i * block_tokens, (i + 1) * block_tokens)).
  absl::Span<const int32_t> blocks() const { return blocks_; }
  int64_t block_tokens() const { return pool_ != nullptr ? pool_->block_tokens() : capacity_; }

  // The storage of `layer`: [capacity, KVH, head_dim] (contiguous) or the pool's [blocks * block_tokens,
  // KVH, head_dim] (paged; rows of other caches' blocks are not this cache's). Read through Segments().
  const Tensor& k(int64_t layer) const { return k_[layer]; }
  const Tensor& v(int64_t layer) const { return v_[layer]; }

 private:
  friend class Model;
  KvCache() = default;
  Tensor& mutable_k(int64_t layer) { return k_[layer]; }
  Tensor& mutable_v(int64_t layer) { return v_[layer]; }
  void set_length(int64_t n) { length_ = n; }
  // Paged: the first block a write at length() lands in; it and every later block must be the cache's own
  // (copy-on-write) before Reserve returns.
  size_t first_writable_block() const { return static_cast<size_t>(length_ / pool_->block_tokens()); }

  int64_t capacity_ = 0;
  int64_t length_ = 0;
  int64_t num_layers_ = 0;
  std::vector<Tensor> k_, v_;
  KvBlockPool* pool_ = nullptr;  // paged only
  std::vector<int32_t> blocks_;   // paged only
};

}  // namespace tessera
