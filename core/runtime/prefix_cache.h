// PrefixCache: keys and values of prompts already computed, kept as references to blocks of the paged KV
// pool (core/model/kv_block_pool.h) and handed to a later request's KV cache when its prompt starts with
// the same tokens, so only the rest of the prompt is prefilled and the shared blocks are stored once.
//
// Identity (what a block's KV depends on, all of it in its key):
//   root      = SHA-256("tessera-prefix-cache/1" | backbone digest | version content digest | kv dtype |
//                       block tokens)
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
// Memory contract: nothing is allocated; the cache holds at most capacity_blocks = capacity_bytes /
// pool.block_bytes() references to pool blocks (the runtime adds that many blocks to the pool, so the
// memory is what the flag says). Store takes a reference to each new whole block of a sequence's cache
// (no copy), Restore gives a new sequence's cache a reference to each block found (no copy); a block stays
// in the pool until its last holder drops it, and holders never write it (KvCache::Reserve copies a
// shared block before a write). So N requests with one system prompt hold its KV once.
// Eviction: least recently used block first. A chain is touched from its last block to its first, so a
// prefix is always more recent than its extensions and a block is evicted before its ancestors. The cache
// is the pool's reclaimer: when a sequence needs blocks and too few are free, the pool has it drop its
// least recently used blocks that no sequence holds (those free memory at once).
//
// Use (Runtime's scheduler): Restore when a request joins (before its prefill: whole blocks of the prompt
// found are handed to its empty KvCache, its length set to min(blocks * block_tokens, max_tokens), so a
// prompt that is entirely cached still computes its last token for the logits -- into a copy of the last
// block, which the restore shares), Store after its prefill and when it finishes (every whole block of the
// positions in its cache). The caches must be paged over the pool the prefix cache was created with.
//
// Exactness: restored positions are bit-for-bit the keys/values the model computed for those tokens. A
// restored prompt then prefills [h, n) in one forward instead of [0, n); the CPU and CUDA GEMMs sum in an
// order that depends on the number of rows in a call, so logits equal a cold prefill's up to float
// summation order (measured <= 5e-7 absolute on builtin-sized models), the same caveat as batching
// (runtime.h); generations compare equal token for token in the tests and the benchmark.
//
// Thread-safety: every method may be called concurrently. Lock order: this cache's mutex, then the pool's
// (the pool calls ReclaimBlocks without holding its own).
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
#include "core/model/kv_block_pool.h"
#include "core/model/kv_cache.h"

namespace tessera::runtime {

struct PrefixCacheOptions {
  int64_t capacity_bytes = 0;  // > 0; rounded down to whole pool blocks (at least one)
};

struct PrefixCacheStats {
  int64_t block_tokens = 0;
  int64_t block_bytes = 0;      // one block, every layer, K and V
  int64_t capacity_blocks = 0;  // the most pool blocks the cache references
  int64_t capacity_bytes = 0;   // capacity_blocks * block_bytes
  int64_t blocks = 0;           // referenced now
  int64_t bytes = 0;            // blocks * block_bytes
  int64_t shared_blocks = 0;    // of those, also held by a running sequence now
  int64_t lookups = 0;          // Restore calls
  int64_t hit_lookups = 0;      // of those, restoring at least one block
  int64_t hit_blocks = 0;       // whole prompt blocks found (and handed over)
  int64_t miss_blocks = 0;      // whole prompt blocks looked up and not found (computed instead)
  int64_t hit_tokens = 0;       // positions restored (what prefill skipped)
  int64_t stored_blocks = 0;    // blocks added
  int64_t evictions = 0;        // blocks dropped to make room (for the cache's capacity or the pool)
};

class PrefixCache : public KvBlockReclaimer {
 public:
  using Hash = std::array<uint8_t, 32>;

  // Over `pool` (which must outlive the cache), as its reclaimer. INVALID_ARGUMENT naming the option for
  // capacity_bytes below one block (with the block's bytes).
  static absl::StatusOr<std::unique_ptr<PrefixCache>> Create(KvBlockPool* pool, PrefixCacheOptions options);
  ~PrefixCache() override;  // drops its references and stops reclaiming for the pool

  // The root of every chain served by one (backbone, version content) pair; `version_digest` is ""
  // for the base model.
  Hash Root(std::string_view backbone_digest, std::string_view version_digest) const;
  // Chain hashes of the whole blocks of `tokens` (tokens.size() / block_tokens of them).
  std::vector<Hash> BlockHashes(const Hash& root, absl::Span<const int32_t> tokens) const;

  // Hands the longest run of cached whole blocks that `tokens` starts with to `cache` (empty, paged over
  // the pool) and sets its length to min(blocks * block_tokens, max_tokens). Returns that length (0:
  // nothing restored, the cache untouched). FAILED_PRECONDITION for a non-empty or foreign cache.
  absl::StatusOr<int64_t> Restore(const Hash& root, absl::Span<const int32_t> tokens, int64_t max_tokens,
                                  KvCache& cache);
  // Takes a reference to each whole block of tokens[0, min(tokens.size(), cache.length())) not cached yet
  // (the cache's own blocks: no copy) and refreshes the ones already cached. FAILED_PRECONDITION for a
  // cache not paged over the pool.
  absl::Status Store(const Hash& root, absl::Span<const int32_t> tokens, const KvCache& cache);

  // KvBlockReclaimer: drops cached blocks no sequence holds, least recently used first. (The pool counts
  // those blocks itself: the cache's references are KvBlockHolder::kReclaimer ones.)
  int64_t ReclaimBlocks(int64_t n) override;

  PrefixCacheStats Stats() const;
  int64_t block_tokens() const { return block_tokens_; }

 private:
  struct Block {
    Hash hash{};
    Hash parent{};
    std::vector<int32_t> tokens;
    int32_t pool_block = -1;          // the referenced pool block
    bool keep = false;                // in the chain a Store is extending: not evicted by that Store
    std::list<int32_t>::iterator lru;  // valid while used
  };
  struct HashOf {
    size_t operator()(const Hash& h) const;
  };

  PrefixCache() = default;
  // Moves the entry to the most recently used end.
  void TouchLocked(int32_t slot);
  // Drops the entry and its pool reference.
  void EvictLocked(int32_t slot);
  // A free entry, evicting the least recently used one not kept if needed; -1 when every one is kept.
  int32_t TakeSlotLocked();
  // The referenced pool blocks, least recently used first.
  std::vector<int32_t> PoolBlocksLocked() const;

  KvBlockPool* pool_ = nullptr;
  int64_t block_tokens_ = 0;
  int64_t block_bytes_ = 0;
  std::string kv_dtype_;

  mutable std::mutex mu_;
  std::vector<Block> blocks_;  // entries; capacity_blocks of them
  std::vector<int32_t> free_;  // unused entries
  std::list<int32_t> lru_;     // used entries, front = least recently used
  absl::flat_hash_map<Hash, int32_t, HashOf> index_;
  PrefixCacheStats stats_;
};

}  // namespace tessera::runtime
