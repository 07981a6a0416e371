// OverlayCache (see overlay_cache.h).
#include "core/runtime/overlay_cache.h"

#include "absl/strings/str_cat.h"
#include "core/model/lora_overlay.h"

namespace tessera::runtime {

OverlayCache::OverlayCache(const ModelConfig& config, Backend* backend, VersionSource* source,
                           int64_t capacity_bytes, std::mutex* device_mu, DType dtype,
                           const ModelWeights* base)
    : config_(config),
      backend_(backend),
      source_(source),
      capacity_bytes_(capacity_bytes),
      device_mu_(device_mu),
      dtype_(dtype),
      base_(base) {}

absl::StatusOr<std::shared_ptr<const ExpertOverlay>> OverlayCache::Acquire(const std::string& tenant,
                                                                          int64_t version) {
  if (version < 1) {
    return absl::InvalidArgumentError(absl::StrCat("OverlayCache: version must be >= 1, got ", version));
  }
  const Key key{tenant, version};
  std::promise<Result> promise;
  std::shared_future<Result> pending;
  uint64_t epoch = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = entries_.find(key); it != entries_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.lru);
      ++hits_;
      return it->second.overlay;
    }
    if (auto it = held_.find(key); it != held_.end()) {
      if (std::shared_ptr<const ExpertOverlay> alive = it->second.overlay.lock()) {
        std::string sha = it->second.sha256;
        held_.erase(it);
        ++readmissions_;
        AdmitLocked(key, alive, std::move(sha));
        return alive;
      }
      held_.erase(it);
    }
    if (auto it = loading_.find(key); it != loading_.end()) {
      pending = it->second;
    } else {
      loading_.emplace(key, promise.get_future().share());
      epoch = tenant_epoch_[tenant];
    }
  }
  if (pending.valid()) return pending.get();  // another thread is loading this key

  Result result = [&]() -> Result {
    absl::StatusOr<VersionBlob> blob = source_->LoadVersion(tenant, version);
    if (!blob.ok()) return blob.status();
    std::shared_ptr<OverlaySlabPool> pool;
    {
      std::lock_guard<std::mutex> lock(mu_);
      pool = pool_;
    }
    SlotAllocator allocate;
    if (pool != nullptr) {
      allocate = [this, pool]() -> absl::StatusOr<ExpertWeights> {
        absl::StatusOr<ExpertWeights> w = pool->Acquire();
        if (w.ok() || w.status().code() != absl::StatusCode::kResourceExhausted) return w;
        pool_overflow_slots_.fetch_add(1);
        return AllocateExpertWeights(config_, dtype_, backend_);
      };
    }
    std::lock_guard<std::mutex> device(*device_mu_);
    // An expert-only version is parsed; a LoRA version is merged into dense slot weights once, here,
    // and then served like any other overlay (see core/model/lora_overlay.h for why).
    return LoadVersionOverlay(config_, std::move(blob->safetensors_bytes), base_, backend_,
                              std::move(blob->sha256), dtype_, allocate);
  }();
  {
    std::lock_guard<std::mutex> lock(mu_);
    loading_.erase(key);
    if (result.ok()) {
      ++loads_;
      if (tenant_epoch_[tenant] == epoch) AdmitLocked(key, *result, (*result)->digest());
    }
  }
  promise.set_value(result);
  return result;
}

bool OverlayCache::IsLiveLocked(const Key& key) const {
  auto it = live_.find(key.first);
  return it != live_.end() && it->second == key.second;
}

void OverlayCache::AdmitLocked(const Key& key, std::shared_ptr<const ExpertOverlay> overlay,
                               std::string sha256) {
  Entry e;
  e.bytes = overlay->bytes();
  e.overlay = std::move(overlay);
  e.sha256 = std::move(sha256);
  lru_.push_front(key);
  e.lru = lru_.begin();
  resident_bytes_ += e.bytes;
  entries_.emplace(key, std::move(e));
  EvictLocked(key);
}

void OverlayCache::EvictLocked(const Key& protect) {
  PruneHeldLocked();
  while (resident_bytes_ > capacity_bytes_ && !entries_.empty()) {
    // Least recently used first: non-live, then live, then the entry being acquired.
    const Key* victim = nullptr;
    for (int pass = 0; pass < 2 && victim == nullptr; ++pass) {
      for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
        if (*it == protect) continue;
        if (pass == 0 && IsLiveLocked(*it)) continue;
        victim = &*it;
        break;
      }
    }
    const Key key = victim != nullptr ? *victim : protect;
    auto it = entries_.find(key);
    held_[key] = Held{it->second.overlay, it->second.sha256, it->second.bytes};
    resident_bytes_ -= it->second.bytes;
    lru_.erase(it->second.lru);
    entries_.erase(it);
    ++evictions_;
  }
}

void OverlayCache::PruneHeldLocked() {
  for (auto it = held_.begin(); it != held_.end();) {
    it = it->second.overlay.expired() ? held_.erase(it) : std::next(it);
  }
}

void OverlayCache::MarkLive(const std::string& tenant, int64_t version) {
  std::lock_guard<std::mutex> lock(mu_);
  if (version <= 0) {
    live_.erase(tenant);
  } else {
    live_[tenant] = version;
  }
}

void OverlayCache::ForgetTenant(const std::string& tenant) {
  std::lock_guard<std::mutex> lock(mu_);
  ++tenant_epoch_[tenant];
  live_.erase(tenant);
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->first.first != tenant) {
      ++it;
      continue;
    }
    resident_bytes_ -= it->second.bytes;
    lru_.erase(it->second.lru);
    it = entries_.erase(it);
  }
  for (auto it = held_.begin(); it != held_.end();) {
    it = it->first.first == tenant ? held_.erase(it) : std::next(it);
  }
}

void OverlayCache::UseSlabPool(std::shared_ptr<OverlaySlabPool> pool) {
  std::lock_guard<std::mutex> lock(mu_);
  pool_ = std::move(pool);
}

OverlayCacheStats OverlayCache::Stats() {
  std::lock_guard<std::mutex> lock(mu_);
  PruneHeldLocked();
  OverlayCacheStats s;
  for (const Key& key : lru_) {
    const Entry& e = entries_.at(key);
    s.resident.push_back({key.first, key.second, e.sha256, e.bytes, IsLiveLocked(key)});
  }
  s.resident_bytes = resident_bytes_;
  for (const auto& [key, h] : held_) s.held_bytes += h.bytes;
  s.capacity_bytes = capacity_bytes_;
  s.loads = loads_;
  s.hits = hits_;
  s.readmissions = readmissions_;
  s.evictions = evictions_;
  if (pool_ != nullptr) {
    s.pool_slabs = pool_->slabs();
    s.pool_slabs_in_use = pool_->slabs_in_use();
  }
  s.pool_overflow_slots = pool_overflow_slots_.load();
  return s;
}

}  // namespace tessera::runtime
