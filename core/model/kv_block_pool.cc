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
  pool->backend_ = backend;
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
  pool->refs_.assign(static_cast<size_t>(num_blocks), 0);
  pool->reclaimer_refs_.assign(static_cast<size_t>(num_blocks), 0);
  return pool;
}

bool KvBlockPool::TakeLocked(int64_t n, std::vector<int32_t>* out) {
  if (static_cast<int64_t>(free_.size()) < n) return false;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t b = free_.back();
    free_.pop_back();
    refs_[static_cast<size_t>(b)] = 1;
    out->push_back(b);
  }
  return true;
}

bool KvBlockPool::Allocate(int64_t n, std::vector<int32_t>* out) {
  if (n <= 0) return true;
  KvBlockReclaimer* reclaimer = nullptr;
  int64_t missing = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (TakeLocked(n, out)) return true;
    reclaimer = reclaimer_;
    missing = n - static_cast<int64_t>(free_.size());
  }
  if (reclaimer == nullptr) return false;
  // Outside the lock: the reclaimer frees blocks through Free. Another thread may take them first; then
  // this call fails like any allocation beyond the free blocks (the caller's policy handles it).
  reclaimer->ReclaimBlocks(missing);
  std::lock_guard<std::mutex> lock(mu_);
  return TakeLocked(n, out);
}

void KvBlockPool::ChangeRefsLocked(int32_t b, int32_t delta, KvBlockHolder holder) {
  const bool was = ReclaimableLocked(b);
  refs_[static_cast<size_t>(b)] += delta;
  if (holder == KvBlockHolder::kReclaimer) reclaimer_refs_[static_cast<size_t>(b)] += delta;
  reclaimable_ += static_cast<int64_t>(ReclaimableLocked(b)) - static_cast<int64_t>(was);
}

void KvBlockPool::Share(absl::Span<const int32_t> blocks, KvBlockHolder holder) {
  std::lock_guard<std::mutex> lock(mu_);
  for (int32_t b : blocks) ChangeRefsLocked(b, +1, holder);
}

void KvBlockPool::Free(absl::Span<const int32_t> blocks, KvBlockHolder holder) {
  if (blocks.empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  // Last block first, so a cache that gives back blocks 3,4,5 hands out 3,4,5 again in that order.
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
    ChangeRefsLocked(*it, -1, holder);
    if (refs_[static_cast<size_t>(*it)] == 0) free_.push_back(*it);
  }
}

int32_t KvBlockPool::refs(int32_t block) const {
  std::lock_guard<std::mutex> lock(mu_);
  return refs_[static_cast<size_t>(block)];
}

absl::StatusOr<int32_t> KvBlockPool::CopyOnWrite(int32_t block) {
  if (refs(block) == 1) return block;
  std::vector<int32_t> fresh;
  if (!Allocate(1, &fresh)) {
    return absl::ResourceExhaustedError(absl::StrCat("the KV block pool has no free block to copy shared block ",
                                                     block, " into before writing (", num_blocks_, " blocks)"));
  }
  std::vector<Tensor> views;
  views.reserve(4 * k_.size());
  for (size_t l = 0; l < k_.size(); ++l) {
    views.push_back(k_[l].Rows(static_cast<int64_t>(block) * block_tokens_, block_tokens_));
    views.push_back(k_[l].Rows(static_cast<int64_t>(fresh[0]) * block_tokens_, block_tokens_));
    views.push_back(v_[l].Rows(static_cast<int64_t>(block) * block_tokens_, block_tokens_));
    views.push_back(v_[l].Rows(static_cast<int64_t>(fresh[0]) * block_tokens_, block_tokens_));
  }
  std::vector<CopyPair> pairs;
  for (size_t i = 0; i < views.size(); i += 2) pairs.push_back(CopyPair{&views[i], &views[i + 1]});
  if (absl::Status st = backend_->CopyMany(pairs); !st.ok()) {
    Free(fresh);
    return st;
  }
  Free({&block, 1});
  return fresh[0];
}

void KvBlockPool::SetReclaimer(KvBlockReclaimer* reclaimer) {
  std::lock_guard<std::mutex> lock(mu_);
  reclaimer_ = reclaimer;
}

int64_t KvBlockPool::free_blocks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(free_.size());
}

int64_t KvBlockPool::reclaimable_blocks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reclaimable_;
}

int64_t KvBlockPool::available_blocks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(free_.size()) + (reclaimer_ != nullptr ? reclaimable_ : 0);
}

}  // namespace tessera
