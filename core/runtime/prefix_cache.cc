// PrefixCache (see prefix_cache.h).
#include "core/runtime/prefix_cache.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/util/sha256.h"
#include "core/util/status_macros.h"

namespace tessera::runtime {
namespace {

// Length-prefixed, so ("ab", "c") and ("a", "bc") hash differently.
void AddField(Sha256& h, std::string_view s) {
  const uint64_t n = s.size();
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  h.Update(len, sizeof(len));
  h.Update(s);
}

void AddTokens(Sha256& h, absl::Span<const int32_t> tokens) {
  std::vector<uint8_t> bytes(tokens.size() * 4);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const uint32_t t = static_cast<uint32_t>(tokens[i]);
    for (int b = 0; b < 4; ++b) bytes[4 * i + b] = static_cast<uint8_t>(t >> (8 * b));
  }
  h.Update(bytes.data(), bytes.size());
}

}  // namespace

size_t PrefixCache::HashOf::operator()(const Hash& h) const {
  size_t out;
  std::memcpy(&out, h.data(), sizeof(out));  // already uniformly distributed
  return out;
}

absl::StatusOr<std::unique_ptr<PrefixCache>> PrefixCache::Create(const ModelConfig& config, Backend* backend,
                                                                 DType kv_dtype, PrefixCacheOptions options) {
  if (backend == nullptr) return absl::InvalidArgumentError("PrefixCache: backend is null");
  if (options.block_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefix cache: block_tokens must be >= 1, got ", options.block_tokens));
  }
  RETURN_IF_ERROR(config.Validate());
  const int64_t block_bytes = options.block_tokens * KvCache::BytesPerPosition(config, kv_dtype);
  const int64_t capacity_blocks = options.capacity_bytes / block_bytes;
  if (capacity_blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--prefix-cache-bytes ", options.capacity_bytes, " holds no block: one block of ", options.block_tokens,
        " tokens takes ", block_bytes, " bytes on this model (0 turns the prefix cache off)"));
  }
  if (capacity_blocks > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("--prefix-cache-bytes ", options.capacity_bytes,
                                                   " is more than 2^30 blocks of ", block_bytes, " bytes"));
  }
  std::unique_ptr<PrefixCache> pc(new PrefixCache());
  pc->backend_ = backend;
  pc->block_tokens_ = options.block_tokens;
  pc->block_bytes_ = block_bytes;
  pc->num_layers_ = config.num_layers;
  pc->kv_dtype_ = DTypeName(kv_dtype);
  const int64_t rows = capacity_blocks * options.block_tokens;
  for (int64_t l = 0; l < config.num_layers; ++l) {
    ASSIGN_OR_RETURN(Tensor k, backend->Alloc({rows, config.num_kv_heads, config.head_dim}, kv_dtype));
    ASSIGN_OR_RETURN(Tensor v, backend->Alloc({rows, config.num_kv_heads, config.head_dim}, kv_dtype));
    pc->k_.push_back(std::move(k));
    pc->v_.push_back(std::move(v));
  }
  pc->blocks_.resize(static_cast<size_t>(capacity_blocks));
  for (int64_t s = capacity_blocks - 1; s >= 0; --s) pc->free_.push_back(static_cast<int32_t>(s));
  pc->stats_.block_tokens = options.block_tokens;
  pc->stats_.block_bytes = block_bytes;
  pc->stats_.capacity_blocks = capacity_blocks;
  pc->stats_.capacity_bytes = capacity_blocks * block_bytes;
  return pc;
}

PrefixCache::Hash PrefixCache::Root(std::string_view backbone_digest, std::string_view version_digest) const {
  Sha256 h;
  AddField(h, "tessera-prefix-cache/1");
  AddField(h, backbone_digest);
  AddField(h, version_digest);
  AddField(h, kv_dtype_);
  AddField(h, absl::StrCat(block_tokens_));
  return h.Finish();
}

std::vector<PrefixCache::Hash> PrefixCache::BlockHashes(const Hash& root, absl::Span<const int32_t> tokens) const {
  std::vector<Hash> out;
  const size_t n = tokens.size() / static_cast<size_t>(block_tokens_);
  out.reserve(n);
  Hash parent = root;
  for (size_t b = 0; b < n; ++b) {
    Sha256 h;
    h.Update(parent.data(), parent.size());
    AddTokens(h, tokens.subspan(b * block_tokens_, block_tokens_));
    parent = h.Finish();
    out.push_back(parent);
  }
  return out;
}

void PrefixCache::TouchLocked(int32_t slot) {
  Block& b = blocks_[slot];
  lru_.splice(lru_.end(), lru_, b.lru);
}

int32_t PrefixCache::TakeSlotLocked() {
  if (!free_.empty()) {
    const int32_t s = free_.back();
    free_.pop_back();
    return s;
  }
  for (auto it = lru_.begin(); it != lru_.end(); ++it) {
    Block& b = blocks_[*it];
    if (b.pins > 0) continue;
    const int32_t s = *it;
    index_.erase(b.hash);
    lru_.erase(it);
    b.used = false;
    b.ready = false;
    stats_.evictions += 1;
    stats_.blocks -= 1;
    return s;
  }
  return -1;
}

absl::Status PrefixCache::CopyBlocks(absl::Span<const int32_t> slots, int64_t first_block, const KvCache& cache,
                                     bool to_cache) {
  // Runs of consecutive slots become one row-range copy per layer and tensor.
  struct Run {
    int64_t slot, block, count;
  };
  std::vector<Run> runs;
  for (size_t j = 0; j < slots.size(); ++j) {
    const int64_t block = first_block + static_cast<int64_t>(j);
    if (!runs.empty() && runs.back().slot + runs.back().count == slots[j] &&
        runs.back().block + runs.back().count == block) {
      runs.back().count += 1;
    } else {
      runs.push_back({slots[j], block, 1});
    }
  }
  std::vector<Tensor> views;
  for (const Run& r : runs) {
    // The cache's positions of these blocks, wherever its storage holds them (one segment when
    // contiguous; one per KV block or run of adjacent blocks when paged).
    const int64_t first = r.block * block_tokens_;
    for (const KvSegment& seg : cache.Segments(first, first + r.count * block_tokens_)) {
      const int64_t store_row = r.slot * block_tokens_ + (seg.position - first);
      for (int64_t l = 0; l < num_layers_; ++l) {
        views.push_back(k_[l].Rows(store_row, seg.count));
        views.push_back(cache.k(l).Rows(seg.row, seg.count));
        views.push_back(v_[l].Rows(store_row, seg.count));
        views.push_back(cache.v(l).Rows(seg.row, seg.count));
      }
    }
  }
  std::vector<CopyPair> pairs;
  pairs.reserve(views.size() / 2);
  for (size_t i = 0; i < views.size(); i += 2) {
    // views[i] is the store's rows, views[i + 1] the cache's.
    pairs.push_back(to_cache ? CopyPair{&views[i], &views[i + 1]} : CopyPair{&views[i + 1], &views[i]});
  }
  return backend_->CopyMany(pairs);
}

absl::StatusOr<int64_t> PrefixCache::Restore(const Hash& root, absl::Span<const int32_t> tokens, int64_t max_tokens,
                                             KvCache& cache) {
  if (cache.length() != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("PrefixCache::Restore: the KV cache holds ", cache.length(), " positions, expected none"));
  }
  const std::vector<Hash> hashes = BlockHashes(root, tokens);
  std::vector<int32_t> slots;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.lookups += 1;
    const Hash* parent = &root;
    for (size_t b = 0; b < hashes.size(); ++b) {
      auto it = index_.find(hashes[b]);
      if (it == index_.end()) break;
      const Block& blk = blocks_[it->second];
      if (!blk.ready || blk.parent != *parent ||
          !std::equal(blk.tokens.begin(), blk.tokens.end(), tokens.begin() + b * block_tokens_)) {
        break;
      }
      slots.push_back(it->second);
      parent = &hashes[b];
    }
    int64_t keep_blocks = static_cast<int64_t>(slots.size());
    // Blocks wholly beyond max_tokens are of no use.
    keep_blocks = std::min<int64_t>(keep_blocks, (std::max<int64_t>(max_tokens, 0) + block_tokens_ - 1) / block_tokens_);
    keep_blocks = std::min<int64_t>(keep_blocks, cache.capacity() / block_tokens_);
    slots.resize(static_cast<size_t>(keep_blocks));
    stats_.hit_blocks += keep_blocks;
    stats_.miss_blocks += static_cast<int64_t>(hashes.size()) - keep_blocks;
    if (keep_blocks > 0) stats_.hit_lookups += 1;
    for (auto s = slots.rbegin(); s != slots.rend(); ++s) {
      blocks_[*s].pins += 1;
      TouchLocked(*s);  // last block first: the prefix ends up more recent than its extensions
    }
  }
  if (slots.empty()) return 0;
  // A paged cache takes the blocks the restored positions need first (none free: restored nothing).
  absl::Status copied = cache.Reserve(static_cast<int64_t>(slots.size()) * block_tokens_);
  if (copied.ok()) copied = CopyBlocks(slots, 0, cache, /*to_cache=*/true);
  int64_t length = 0;
  if (copied.ok()) {
    length = std::min<int64_t>(static_cast<int64_t>(slots.size()) * block_tokens_, max_tokens);
    copied = cache.Extend(length);
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (int32_t s : slots) blocks_[s].pins -= 1;
  if (!copied.ok()) return copied;
  stats_.hit_tokens += length;
  return length;
}

absl::Status PrefixCache::Store(const Hash& root, absl::Span<const int32_t> tokens, const KvCache& cache) {
  tokens = tokens.subspan(0, std::min<size_t>(tokens.size(), static_cast<size_t>(cache.length())));
  const std::vector<Hash> hashes = BlockHashes(root, tokens);
  if (hashes.empty()) return absl::OkStatus();
  std::vector<int32_t> chain;     // the chain's slots, block 0 first (pinned while this call runs)
  std::vector<int32_t> fresh;     // of those, the new ones to copy into (consecutive blocks from first_new)
  int64_t first_new = -1;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t b = 0; b < hashes.size(); ++b) {
      auto it = index_.find(hashes[b]);
      if (it != index_.end()) {
        if (first_new >= 0) break;  // cached again after a gap: keep the new run contiguous
        const Block& blk = blocks_[it->second];
        if (!blk.ready) break;      // another Store is filling it: that one finishes the chain
        chain.push_back(it->second);
        blocks_[it->second].pins += 1;
        continue;
      }
      const int32_t s = TakeSlotLocked();
      if (s < 0) break;  // every block is pinned by copies in flight
      Block& blk = blocks_[s];
      blk.hash = hashes[b];
      blk.parent = b == 0 ? root : hashes[b - 1];
      blk.tokens.assign(tokens.begin() + b * block_tokens_, tokens.begin() + (b + 1) * block_tokens_);
      blk.used = true;
      blk.ready = false;
      blk.pins = 1;
      blk.lru = lru_.insert(lru_.end(), s);
      index_.emplace(hashes[b], s);
      stats_.blocks += 1;
      if (first_new < 0) first_new = static_cast<int64_t>(b);
      chain.push_back(s);
      fresh.push_back(s);
    }
  }
  const absl::Status copied =
      fresh.empty() ? absl::OkStatus() : CopyBlocks(fresh, first_new, cache, /*to_cache=*/false);
  std::lock_guard<std::mutex> lock(mu_);
  for (int32_t s : fresh) {
    Block& blk = blocks_[s];
    if (copied.ok()) {
      blk.ready = true;
      stats_.stored_blocks += 1;
    } else {
      index_.erase(blk.hash);
      lru_.erase(blk.lru);
      blk.used = false;
      stats_.blocks -= 1;
      free_.push_back(s);
    }
  }
  for (auto s = chain.rbegin(); s != chain.rend(); ++s) {
    blocks_[*s].pins -= 1;
    if (blocks_[*s].used) TouchLocked(*s);
  }
  return copied;
}

PrefixCacheStats PrefixCache::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  PrefixCacheStats s = stats_;
  s.bytes = s.blocks * block_bytes_;
  return s;
}

}  // namespace tessera::runtime
