// KvCachePool (see kv_cache_pool.h).
#include "core/runtime/kv_cache_pool.h"

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"

namespace tessera::runtime {

absl::StatusOr<std::unique_ptr<KvCachePool>> KvCachePool::Create(const ModelConfig& config, int64_t slots,
                                                                 int64_t capacity, int64_t num_blocks,
                                                                 int64_t block_tokens, Backend* backend, DType dtype) {
  if (slots < 1) return absl::InvalidArgumentError(absl::StrCat("KvCachePool: slots must be >= 1, got ", slots));
  std::unique_ptr<KvCachePool> pool(new KvCachePool());
  pool->capacity_ = capacity;
  ASSIGN_OR_RETURN(pool->blocks_, KvBlockPool::Create(config, num_blocks, block_tokens, backend, dtype));
  for (int64_t i = 0; i < slots; ++i) {
    ASSIGN_OR_RETURN(std::unique_ptr<KvCache> c, KvCache::CreatePaged(pool->blocks_.get(), capacity));
    pool->free_.push_back(c.get());
    pool->all_.push_back(std::move(c));
  }
  return pool;
}

KvCache* KvCachePool::Acquire() {
  std::lock_guard<std::mutex> lock(mu_);
  if (free_.empty()) return nullptr;
  KvCache* c = free_.back();
  free_.pop_back();
  return c;
}

void KvCachePool::Release(KvCache* cache) {
  if (cache == nullptr) return;
  cache->Reset();
  std::lock_guard<std::mutex> lock(mu_);
  free_.push_back(cache);
}

int64_t KvCachePool::available() {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(free_.size());
}

}  // namespace tessera::runtime
