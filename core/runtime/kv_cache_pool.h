// KvCachePool: a fixed set of KV caches allocated once, handed to requests as they join the batch.
//
// Memory contract: Create allocates `count` caches of `capacity` positions each on the model's
// backend (count * KvCache::bytes()); nothing is allocated afterwards, so steady-state serving does no
// per-request device allocation. A released cache is Reset (length 0) and reused; its old contents
// are never read (positions >= length are garbage by KvCache's contract), so nothing computed for one
// request (tenant, version) can leak into another's.
// Thread-safety: Acquire/Release are thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/kv_cache.h"

namespace tessera::runtime {

class KvCachePool {
 public:
  // `dtype`: the caches' (KvCache::Create), normally the model's matrix dtype.
  static absl::StatusOr<std::unique_ptr<KvCachePool>> Create(const ModelConfig& config, int64_t count,
                                                             int64_t capacity, Backend* backend,
                                                             DType dtype = DType::kF32);

  // A free cache with length 0, or nullptr when all are in use.
  KvCache* Acquire();
  void Release(KvCache* cache);

  int64_t capacity() const { return capacity_; }
  int64_t size() const { return static_cast<int64_t>(all_.size()); }
  int64_t available();
  int64_t bytes() const;  // all caches together

 private:
  KvCachePool() = default;
  int64_t capacity_ = 0;
  std::vector<std::unique_ptr<KvCache>> all_;
  std::mutex mu_;
  std::vector<KvCache*> free_;
};

}  // namespace tessera::runtime
