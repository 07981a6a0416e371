// KvCache (see kv_cache.h).
#include "core/model/kv_cache.h"

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

int64_t KvCache::BytesPerPosition(const ModelConfig& config, DType dtype) {
  return 2 * config.num_layers * config.num_kv_heads * config.head_dim * static_cast<int64_t>(DTypeSize(dtype));
}

int64_t KvCache::bytes() const {
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
  if (new_length < length_ || new_length > capacity_) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvCache::Extend: new_length ", new_length, " not in [", length_, ", ", capacity_, "]"));
  }
  length_ = new_length;
  return absl::OkStatus();
}

}  // namespace tessera
