// KvCache (see kv_cache.h).
#include "core/model/kv_cache.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(const ModelConfig& config, int64_t capacity,
                                                         Backend* backend, DType dtype) {
  if (backend == nullptr) return absl::InvalidArgumentError("KvCache: backend is null");
  if (dtype != DType::kF32 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("KvCache: dtype must be f32 or bf16, got ", DTypeName(dtype)));
  }
  if (capacity <= 0) return absl::InvalidArgumentError(absl::StrCat("KvCache: capacity must be > 0, got ", capacity));
  RETURN_IF_ERROR(config.Validate());
  std::unique_ptr<KvCache> c(new KvCache());
  c->capacity_ = capacity;
  c->num_layers_ = config.num_layers;
  for (int64_t l = 0; l < config.num_layers; ++l) {
    ASSIGN_OR_RETURN(Tensor k, backend->Alloc({capacity, config.num_kv_heads, config.head_dim}, dtype));
    ASSIGN_OR_RETURN(Tensor v, backend->Alloc({capacity, config.num_kv_heads, config.head_dim}, dtype));
    c->k_.push_back(std::move(k));
    c->v_.push_back(std::move(v));
  }
  return c;
}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::CreatePaged(KvBlockPool* pool, int64_t capacity) {
  if (pool == nullptr) return absl::InvalidArgumentError("KvCache: block pool is null");
  if (capacity <= 0) return absl::InvalidArgumentError(absl::StrCat("KvCache: capacity must be > 0, got ", capacity));
  std::unique_ptr<KvCache> c(new KvCache());
  c->capacity_ = capacity;
  c->num_layers_ = pool->num_layers();
  c->pool_ = pool;
  for (int64_t l = 0; l < pool->num_layers(); ++l) {
    c->k_.push_back(pool->k(l));
    c->v_.push_back(pool->v(l));
  }
  return c;
}

KvCache::~KvCache() {
  if (pool_ != nullptr) pool_->Free(blocks_);
}

void KvCache::Reset() {
  length_ = 0;
  if (pool_ != nullptr) {
    pool_->Free(blocks_);
    blocks_.clear();
  }
}

int64_t KvCache::reserved() const {
  if (pool_ == nullptr) return capacity_;
  return std::min<int64_t>(capacity_, static_cast<int64_t>(blocks_.size()) * pool_->block_tokens());
}

absl::Status KvCache::Reserve(int64_t positions) {
  if (positions > capacity_) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvCache::Reserve: ", positions, " positions exceed the capacity ", capacity_));
  }
  if (pool_ == nullptr) return absl::OkStatus();
  // Blocks this call's writes may touch must be the cache's own (shared ones came from AdoptBlocks or were
  // handed to the prefix cache; neither may change under their other holders).
  for (size_t i = first_writable_block(); i < blocks_.size(); ++i) {
    ASSIGN_OR_RETURN(blocks_[i], pool_->CopyOnWrite(blocks_[i]));
  }
  if (positions <= reserved()) return absl::OkStatus();
  const int64_t need =
      KvBlockPool::BlocksFor(positions, pool_->block_tokens()) - static_cast<int64_t>(blocks_.size());
  if (!pool_->Allocate(need, &blocks_)) {
    return absl::ResourceExhaustedError(absl::StrCat("the KV block pool has ", pool_->free_blocks(), " of ",
                                                     pool_->num_blocks(), " blocks free; ", need,
                                                     " more are needed for ", positions, " positions"));
  }
  return absl::OkStatus();
}

int64_t KvCache::BlocksToCopyBeforeWrite() const {
  if (pool_ == nullptr) return 0;
  int64_t n = 0;
  for (size_t i = first_writable_block(); i < blocks_.size(); ++i) n += pool_->refs(blocks_[i]) > 1;
  return n;
}

std::vector<KvSegment> KvCache::Segments(int64_t begin, int64_t end) const {
  std::vector<KvSegment> out;
  end = std::min(end, reserved());
  if (end <= begin) return out;
  if (pool_ == nullptr) {
    out.push_back(KvSegment{begin, begin, end - begin});
    return out;
  }
  const int64_t bt = pool_->block_tokens();
  for (int64_t p = begin; p < end;) {
    const int64_t block = p / bt, offset = p % bt;
    const int64_t count = std::min(end - p, bt - offset);
    const int64_t row = static_cast<int64_t>(blocks_[static_cast<size_t>(block)]) * bt + offset;
    // Consecutive blocks that are also consecutive in storage make one segment.
    if (!out.empty() && out.back().row + out.back().count == row) {
      out.back().count += count;
    } else {
      out.push_back(KvSegment{p, row, count});
    }
    p += count;
  }
  return out;
}

int64_t KvCache::BytesPerPosition(const ModelConfig& config, DType dtype) {
  return 2 * config.num_layers * config.num_kv_heads * config.head_dim * static_cast<int64_t>(DTypeSize(dtype));
}

int64_t KvCache::bytes() const {
  if (pool_ != nullptr) return static_cast<int64_t>(blocks_.size()) * pool_->block_bytes();
  int64_t n = 0;
  for (size_t i = 0; i < k_.size(); ++i) n += k_[i].nbytes() + v_[i].nbytes();
  return n;
}

absl::Status KvCache::Truncate(int64_t new_length) {
  if (new_length < 0 || new_length > length_) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvCache::Truncate: new_length ", new_length, " not in [0, ", length_, "]"));
  }
  length_ = new_length;
  return absl::OkStatus();
}

absl::Status KvCache::Extend(int64_t new_length) {
  if (new_length < length_ || new_length > reserved()) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvCache::Extend: new_length ", new_length, " not in [", length_, ", ", reserved(), "]"));
  }
  length_ = new_length;
  return absl::OkStatus();
}

absl::Status KvCache::AdoptBlocks(std::vector<int32_t> blocks, int64_t length) {
  absl::Status bad;
  if (pool_ == nullptr) {
    bad = absl::InvalidArgumentError("KvCache::AdoptBlocks: the cache is not paged");
  } else if (length_ != 0 || !blocks_.empty()) {
    bad = absl::InvalidArgumentError(absl::StrCat("KvCache::AdoptBlocks: the cache holds ", length_,
                                                  " positions in ", blocks_.size(), " blocks, expected none"));
  } else if (length < 0 || length > static_cast<int64_t>(blocks.size()) * pool_->block_tokens() ||
             length > capacity_) {
    bad = absl::InvalidArgumentError(absl::StrCat("KvCache::AdoptBlocks: length ", length, " not in [0, ",
                                                  std::min<int64_t>(capacity_, static_cast<int64_t>(blocks.size()) *
                                                                                   pool_->block_tokens()),
                                                  "]"));
  }
  if (!bad.ok()) {
    if (pool_ != nullptr) pool_->Free(blocks);
    return bad;
  }
  blocks_ = std::move(blocks);
  length_ = length;
  return absl::OkStatus();
}

}  // namespace tessera
