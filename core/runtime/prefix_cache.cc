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

absl::StatusOr<std::unique_ptr<PrefixCache>> PrefixCache::Create(KvBlockPool* pool, PrefixCacheOptions options) {
  if (pool == nullptr) return absl::InvalidArgumentError("PrefixCache: the KV block pool is null");
  const int64_t block_bytes = pool->block_bytes();
  const int64_t capacity_blocks = options.capacity_bytes / block_bytes;
  if (capacity_blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--prefix-cache-bytes ", options.capacity_bytes, " holds no block: one block of ", pool->block_tokens(),
        " tokens takes ", block_bytes, " bytes on this model (0 turns the prefix cache off)"));
  }
  if (capacity_blocks > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("--prefix-cache-bytes ", options.capacity_bytes,
                                                   " is more than 2^30 blocks of ", block_bytes, " bytes"));
  }
  std::unique_ptr<PrefixCache> pc(new PrefixCache());
  pc->pool_ = pool;
  pc->block_tokens_ = pool->block_tokens();
  pc->block_bytes_ = block_bytes;
  pc->kv_dtype_ = DTypeName(pool->dtype());
  pc->blocks_.resize(static_cast<size_t>(capacity_blocks));
  for (int64_t s = capacity_blocks - 1; s >= 0; --s) pc->free_.push_back(static_cast<int32_t>(s));
  pc->stats_.block_tokens = pc->block_tokens_;
  pc->stats_.block_bytes = block_bytes;
  pc->stats_.capacity_blocks = capacity_blocks;
  pc->stats_.capacity_bytes = capacity_blocks * block_bytes;
  pool->SetReclaimer(pc.get());
  return pc;
}

PrefixCache::~PrefixCache() {
  pool_->SetReclaimer(nullptr);
  std::lock_guard<std::mutex> lock(mu_);
  pool_->Free(PoolBlocksLocked(), KvBlockHolder::kReclaimer);
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

void PrefixCache::EvictLocked(int32_t slot) {
  Block& b = blocks_[slot];
  index_.erase(b.hash);
  lru_.erase(b.lru);
  pool_->Free({&b.pool_block, 1}, KvBlockHolder::kReclaimer);
  b.pool_block = -1;
  b.tokens.clear();
  free_.push_back(slot);
  stats_.evictions += 1;
  stats_.blocks -= 1;
}

int32_t PrefixCache::TakeSlotLocked() {
  if (free_.empty()) {
    auto it = std::find_if(lru_.begin(), lru_.end(), [&](int32_t s) { return !blocks_[s].keep; });
    if (it == lru_.end()) return -1;
    EvictLocked(*it);
  }
  const int32_t s = free_.back();
  free_.pop_back();
  return s;
}

std::vector<int32_t> PrefixCache::PoolBlocksLocked() const {
  std::vector<int32_t> out;
  out.reserve(lru_.size());
  for (int32_t s : lru_) out.push_back(blocks_[s].pool_block);
  return out;
}

absl::StatusOr<int64_t> PrefixCache::Restore(const Hash& root, absl::Span<const int32_t> tokens, int64_t max_tokens,
                                             KvCache& cache) {
  if (cache.length() != 0 || !cache.blocks().empty()) {
    return absl::FailedPreconditionError(absl::StrCat("PrefixCache::Restore: the KV cache holds ", cache.length(),
                                                      " positions in ", cache.blocks().size(),
                                                      " blocks, expected none"));
  }
  if (cache.pool() != pool_) {
    return absl::FailedPreconditionError("PrefixCache::Restore: the KV cache is not paged over the cache's pool");
  }
  const std::vector<Hash> hashes = BlockHashes(root, tokens);
  std::vector<int32_t> found;  // pool blocks, one reference each taken for `cache`
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.lookups += 1;
    std::vector<int32_t> slots;
    const Hash* parent = &root;
    for (size_t b = 0; b < hashes.size(); ++b) {
      auto it = index_.find(hashes[b]);
      if (it == index_.end()) break;
      const Block& blk = blocks_[it->second];
      if (blk.parent != *parent ||
          !std::equal(blk.tokens.begin(), blk.tokens.end(), tokens.begin() + b * block_tokens_)) {
        break;
      }
      slots.push_back(it->second);
      parent = &hashes[b];
    }
    int64_t keep_blocks = static_cast<int64_t>(slots.size());
    // Blocks wholly beyond max_tokens are of no use.
    keep_blocks = std::min<int64_t>(keep_blocks, (std::max<int64_t>(max_tokens, 0) + block_tokens_ - 1) / block_tokens_);
    keep_blocks = std::min<int64_t>(keep_blocks, (cache.capacity() + block_tokens_ - 1) / block_tokens_);
    slots.resize(static_cast<size_t>(keep_blocks));
    stats_.hit_blocks += keep_blocks;
    stats_.miss_blocks += static_cast<int64_t>(hashes.size()) - keep_blocks;
    if (keep_blocks > 0) stats_.hit_lookups += 1;
    for (auto s = slots.rbegin(); s != slots.rend(); ++s) {
      TouchLocked(*s);  // last block first: the prefix ends up more recent than its extensions
    }
    for (int32_t s : slots) found.push_back(blocks_[s].pool_block);
    // Taken under the lock: an eviction right after this cannot free them.
    pool_->Share(found);
  }
  if (found.empty()) return 0;
  const int64_t length = std::min({static_cast<int64_t>(found.size()) * block_tokens_, max_tokens, cache.capacity()});
  RETURN_IF_ERROR(cache.AdoptBlocks(std::move(found), length));
  std::lock_guard<std::mutex> lock(mu_);
  stats_.hit_tokens += length;
  return length;
}

absl::Status PrefixCache::Store(const Hash& root, absl::Span<const int32_t> tokens, const KvCache& cache) {
  if (cache.pool() != pool_) {
    return absl::FailedPreconditionError("PrefixCache::Store: the KV cache is not paged over the cache's pool");
  }
  tokens = tokens.subspan(0, std::min<size_t>(tokens.size(), static_cast<size_t>(cache.length())));
  const std::vector<Hash> hashes = BlockHashes(root, tokens);
  if (hashes.empty()) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<int32_t> chain;  // the chain's entries, block 0 first (kept from eviction during this call)
  for (size_t b = 0; b < hashes.size(); ++b) {
    auto it = index_.find(hashes[b]);
    int32_t s = -1;
    if (it != index_.end()) {
      s = it->second;
    } else {
      s = TakeSlotLocked();
      if (s < 0) break;  // the whole capacity is this chain: the rest is not stored
      Block& blk = blocks_[s];
      blk.hash = hashes[b];
      blk.parent = b == 0 ? root : hashes[b - 1];
      blk.tokens.assign(tokens.begin() + b * block_tokens_, tokens.begin() + (b + 1) * block_tokens_);
      blk.pool_block = cache.blocks()[b];
      pool_->Share({&blk.pool_block, 1}, KvBlockHolder::kReclaimer);
      blk.lru = lru_.insert(lru_.end(), s);
      index_.emplace(hashes[b], s);
      stats_.blocks += 1;
      stats_.stored_blocks += 1;
    }
    blocks_[s].keep = true;
    chain.push_back(s);
  }
  for (auto s = chain.rbegin(); s != chain.rend(); ++s) {
    blocks_[*s].keep = false;
    TouchLocked(*s);
  }
  return absl::OkStatus();
}

int64_t PrefixCache::ReclaimBlocks(int64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t freed = 0;
  for (auto it = lru_.begin(); it != lru_.end() && freed < n;) {
    const int32_t s = *it++;  // EvictLocked erases s from lru_
    if (pool_->refs(blocks_[s].pool_block) != 1) continue;  // a running sequence holds it: freeing frees nothing
    EvictLocked(s);
    freed += 1;
  }
  return freed;
}

PrefixCacheStats PrefixCache::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  PrefixCacheStats s = stats_;
  s.bytes = s.blocks * block_bytes_;
  // The cache is its pool's only reclaimer: the blocks only it holds are the pool's reclaimable ones.
  s.shared_blocks = s.blocks - pool_->reclaimable_blocks();
  return s;
}

}  // namespace tessera::runtime
