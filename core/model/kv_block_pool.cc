// KvBlockPool (see kv_block_pool.h).
#include "core/model/kv_block_pool.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<KvBlockPool>> KvBlockPool::Create(const ModelConfig& config, int64_t num_blocks,
                                                                 int64_t block_tokens, Backend* backend,
                                                                 DType dtype) {
  if (backend == nullptr) return absl::InvalidArgumentError("KvBlockPool: backend is null");
  if (dtype != DType::kF32 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("KvBlockPool: dtype must be f32 or bf16, got ", DTypeName(dtype)));
  }
  if (num_blocks < 1 || num_blocks > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("KvBlockPool: num_blocks must be in [1, 2^31), got ", num_blocks));
  }
  if (block_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("KvBlockPool: block_tokens must be >= 1, got ", block_tokens));
  }
  RETURN_IF_ERROR(config.Validate());
  std::unique_ptr<KvBlockPool> pool(new KvBlockPool());
  pool->num_blocks_ = num_blocks;
  pool->block_tokens_ = block_tokens;
  pool->dtype_ = dtype;
  pool->block_bytes_ = 2 * config.num_layers * block_tokens * config.num_kv_heads * config.head_dim *
                       static_cast<int64_t>(DTypeSize(dtype));
  const int64_t rows = num_blocks * block_tokens;
  for (int64_t l = 0; l < config.num_layers; ++l) {
    ASSIGN_OR_RETURN(Tensor k, backend->Alloc({rows, config.num_kv_heads, config.head_dim}, dtype));
    ASSIGN_OR_RETURN(Tensor v, backend->Alloc({rows, config.num_kv_heads, config.head_dim}, dtype));
    pool->k_.push_back(std::move(k));
    pool->v_.push_back(std::move(v));
  }
  // Block 0 on top of the stack: a fresh pool hands out blocks in ascending order.
  pool->free_.resize(static_cast<size_t>(num_blocks));
  for (int64_t b = 0; b < num_blocks; ++b) pool->free_[static_cast<size_t>(b)] = static_cast<int32_t>(num_blocks - 1 - b);
  return pool;
}

bool KvBlockPool::Allocate(int64_t n, std::vector<int32_t>* out) {
  if (n <= 0) return true;
  std::lock_guard<std::mutex> lock(mu_);
  if (static_cast<int64_t>(free_.size()) < n) return false;
  for (int64_t i = 0; i < n; ++i) {
    out->push_back(free_.back());
    free_.pop_back();
  }
  return true;
}

void KvBlockPool::Free(absl::Span<const int32_t> blocks) {
  if (blocks.empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  // Last block first, so a cache that gives back blocks 3,4,5 hands out 3,4,5 again in that order.
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) free_.push_back(*it);
}

int64_t KvBlockPool::free_blocks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(free_.size());
}

}  // namespace tessera
