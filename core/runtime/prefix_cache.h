// PrefixCache: keys and values of prompts already computed, kept in fixed-size token blocks and copied
// into a later request's KV cache when its prompt starts with the same tokens, so only the rest of the
// prompt is prefilled.
//
// Identity (what a block's KV depends on, all of it in its key):
//   root      = SHA-256("tessera-prefix-cache/1" | backbone digest | version content digest | kv dtype)
//   hash(b_0) = SHA-256(root       | token ids of block 0)      (block_tokens little-endian int32 each)
//   hash(b_i) = SHA-256(hash(b_i-1) | token ids of block i)
// so a block's hash fixes every token before and in it, the backbone, and the tenant version's content.
// The version enters by its CONTENT digest (ExpertOverlay::digest(): the registry's blob sha256; "" for
// the base model), never by tenant name or version number: two tenants serving byte-identical versions
// share blocks, different contents never do, and a version re-published or swapped out cannot be
// served KV computed with other weights (the failure of caches keyed by adapter name: vLLM #30931,
// #42125). An overlay changes the KV of every layer after its first replaced slot, so the whole block
// is keyed by the version (no per-layer sharing). A lookup also compares the block's stored tokens and
// parent hash, so even a hash collision cannot return another prefix's KV.
//
// Memory contract: Create allocates, on the model's backend, K and V of
// [capacity_blocks * block_tokens, KVH, head_dim] per layer in the KV dtype, capacity_blocks =
// capacity_bytes / (block_tokens * KvCache::BytesPerPosition); nothing is allocated afterwards.
// Eviction: least recently used block first, among blocks not being copied. A chain is touched from its
// last block to its first, so a prefix is always more recent than its extensions and a block is never
// evicted before its descendants (no unreachable blocks while their parent is kept).
//
// Use (Runtime's scheduler): Restore when a request joins (before its prefill: whole blocks of the prompt
// found in the cache are copied into its KvCache, at most `max_tokens` positions kept, so a prompt that
// is entirely cached still computes its last token for the logits), Store after its prefill and when it
// finishes (every whole block of the positions in its cache). Copies are Backend::CopyMany calls of row
// ranges: the caller serializes backend use (the runtime's device mutex).
//
// Exactness: restored rows are bit-for-bit the keys/values the model computed for those tokens. A
// restored prompt then prefills [h, n) in one forward instead of [0, n); the CPU and CUDA GEMMs sum in an
// order that depends on the number of rows in a call, so logits equal a cold prefill's up to float
// summation order (measured <= 5e-7 absolute on builtin-sized models), the same caveat as batching
// (runtime.h); generations compare equal token for token in the tests and the benchmark.
//
// Thread-safety: every method may be called concurrently. Blocks being copied are pinned (never evicted
// or overwritten); a block being stored is invisible to lookups until its copy finished.
#pragma once

#include <array>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/kv_cache.h"

namespace tessera::runtime {

struct PrefixCacheOptions {
  int64_t capacity_bytes = 0;  // > 0; rounded down to whole blocks (at least one)
  int64_t block_tokens = 16;   // tokens per block, >= 1
};

struct PrefixCacheStats {
  int64_t block_tokens = 0;
  int64_t block_bytes = 0;      // one block, every layer, K and V
  int64_t capacity_blocks = 0;
  int64_t capacity_bytes = 0;   // capacity_blocks * block_bytes (allocated)
  int64_t blocks = 0;           // holding a prefix now
  int64_t bytes = 0;            // blocks * block_bytes
  int64_t lookups = 0;          // Restore calls
  int64_t hit_lookups = 0;      // of those, restoring at least one block
  int64_t hit_blocks = 0;       // whole prompt blocks found (and copied)
  int64_t miss_blocks = 0;      // whole prompt blocks looked up and not found (computed instead)
  int64_t hit_tokens = 0;       // positions restored (what prefill skipped)
  int64_t stored_blocks = 0;    // blocks written
  int64_t evictions = 0;        // blocks dropped to make room
};

class PrefixCache {
 public:
  using Hash = std::array<uint8_t, 32>;

  // INVALID_ARGUMENT naming the option for block_tokens < 1 or capacity_bytes below one block (with the
  // block's bytes); allocation errors from the backend.
  static absl::StatusOr<std::unique_ptr<PrefixCache>> Create(const ModelConfig& config, Backend* backend,
                                                             DType kv_dtype, PrefixCacheOptions options);

  // The root of every chain served by one (backbone, version content) pair; `version_digest` is ""
  // for the base model.
  Hash Root(std::string_view backbone_digest, std::string_view version_digest) const;
  // Chain hashes of the whole blocks of `tokens` (tokens.size() / block_tokens of them).
  std::vector<Hash> BlockHashes(const Hash& root, absl::Span<const int32_t> tokens) const;

  // Copies the longest run of cached whole blocks that `tokens` starts with into `cache` (which must be
  // empty) and sets its length to min(blocks * block_tokens, max_tokens). Returns that length (0: nothing
  // restored, the cache untouched). On a backend error the cache stays at length 0.
  absl::StatusOr<int64_t> Restore(const Hash& root, absl::Span<const int32_t> tokens, int64_t max_tokens,
                                  KvCache& cache);
  // Stores the whole blocks of tokens[0, min(tokens.size(), cache.length())) not cached yet, copying their
  // rows from `cache`, and refreshes the ones already cached. When every block is in use by copies, the
  // rest of the chain is not stored (not an error).
  absl::Status Store(const Hash& root, absl::Span<const int32_t> tokens, const KvCache& cache);

  PrefixCacheStats Stats() const;
  int64_t block_tokens() const { return block_tokens_; }

 private:
  struct Block {
    Hash hash{};
    Hash parent{};
    std::vector<int32_t> tokens;
    bool used = false;   // holds (or is being filled with) a prefix
    bool ready = false;  // the copy finished: lookups may return it
    int pins = 0;        // copies in flight reading or writing it
    std::list<int32_t>::iterator lru;  // valid while used
  };
  struct HashOf {
    size_t operator()(const Hash& h) const;
  };

  PrefixCache() = default;
  // Moves the block to the most recently used end.
  void TouchLocked(int32_t slot);
  // A free slot, evicting the least recently used unpinned block if needed; -1 when all are pinned.
  int32_t TakeSlotLocked();
  // Copies rows between the store and a KV cache for the given (slot, cache block) pairs.
  absl::Status CopyBlocks(absl::Span<const int32_t> slots, int64_t first_block, const KvCache& cache,
                          bool to_cache);

  Backend* backend_ = nullptr;
  int64_t block_tokens_ = 0;
  int64_t block_bytes_ = 0;
  int64_t num_layers_ = 0;
  std::string kv_dtype_;
  std::vector<Tensor> k_, v_;  // per layer [capacity_blocks * block_tokens, KVH, head_dim]

  mutable std::mutex mu_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_;
  std::list<int32_t> lru_;  // front = least recently used
  absl::flat_hash_map<Hash, int32_t, HashOf> index_;
  PrefixCacheStats stats_;
};

}  // namespace tessera::runtime
