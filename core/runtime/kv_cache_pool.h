// KvCachePool: the runtime's KV memory, paged. One KvBlockPool (core/model/kv_block_pool.h) of
// `num_blocks` blocks of `block_tokens` positions, and one paged KvCache per batch slot that takes
// blocks from it as its sequence grows (Model::Forward reserves what a step appends) and gives them
// back when the request leaves or is preempted.
//
// Memory contract: Create allocates the block pool (num_blocks * block_bytes on the model's backend)
// and `slots` cache objects (host bookkeeping only); nothing is allocated afterwards, so steady-state
// serving does no per-request device allocation. A released cache is Reset (length 0, blocks freed);
// a block's old contents are never read (a cache reads only positions it wrote), so nothing computed for
// one request (tenant, version) can leak into another's.
// Thread-safety: Acquire/Release/available and the block pool's counters are thread-safe; a cache is
// used by one request at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/kv_block_pool.h"
#include "core/model/kv_cache.h"

namespace tessera::runtime {

class KvCachePool {
 public:
  // `capacity`: positions one request may reach (its context); `dtype`: the blocks' (KvBlockPool::Create),
  // normally the model's matrix dtype.
  static absl::StatusOr<std::unique_ptr<KvCachePool>> Create(const ModelConfig& config, int64_t slots,
                                                             int64_t capacity, int64_t num_blocks,
                                                             int64_t block_tokens, Backend* backend,
                                                             DType dtype = DType::kF32);

  // A free cache with length 0 and no blocks, or nullptr when every slot is in use.
  KvCache* Acquire();
  void Release(KvCache* cache);

  int64_t capacity() const { return capacity_; }
  int64_t size() const { return static_cast<int64_t>(all_.size()); }
  int64_t available();  // free slots
  int64_t bytes() const { return blocks_->bytes(); }

  int64_t block_tokens() const { return blocks_->block_tokens(); }
  int64_t total_blocks() const { return blocks_->num_blocks(); }
  int64_t free_blocks() const { return blocks_->free_blocks(); }
  // Free plus reclaimable from the prefix cache (KvBlockPool::available_blocks).
  int64_t available_blocks() const { return blocks_->available_blocks(); }
  KvBlockPool* block_pool() { return blocks_.get(); }
  // Blocks that hold `positions` positions.
  int64_t BlocksFor(int64_t positions) const { return KvBlockPool::BlocksFor(positions, blocks_->block_tokens()); }

 private:
  KvCachePool() = default;
  int64_t capacity_ = 0;
  std::unique_ptr<KvBlockPool> blocks_;  // outlives the caches below (declared first, destroyed last)
  std::vector<std::unique_ptr<KvCache>> all_;
  std::mutex mu_;
  std::vector<KvCache*> free_;
};

}  // namespace tessera::runtime
