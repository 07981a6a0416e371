// OverlayCache: the device / host / disk tiers (see overlay_cache.h).
#include "core/runtime/overlay_cache.h"

#include "absl/strings/str_cat.h"
#include "core/model/lora_overlay.h"

namespace tessera::runtime {
namespace {

// The tier's eviction victim: least recently used first, versions that are not live before live ones,
// never `protect` (the entry just inserted). nullptr when only `protect` is left. Node: LruNode.
template <typename Node>
const Node* PickVictim(const std::list<Node>& lru, const std::pair<std::string, int64_t>& protect) {
  for (int pass = 0; pass < 2; ++pass) {
    for (auto it = lru.rbegin(); it != lru.rend(); ++it) {
      if (pass == 0 && it->live) continue;  // first: a flag, where the key compare is a string compare
      if (it->key == protect) continue;
      return &*it;
    }
  }
  return nullptr;
}

}  // namespace

OverlayCache::OverlayCache(const ModelConfig& config, Backend* backend, VersionSource* source,
                           int64_t capacity_bytes, std::mutex* device_mu, DType dtype,
                           const ModelWeights* base, int64_t host_bytes)
    : config_(config),
      backend_(backend),
      source_(source),
      capacity_bytes_(capacity_bytes),
      host_capacity_bytes_(host_bytes),
      device_mu_(device_mu),
      dtype_(dtype),
      base_(base) {}

std::shared_ptr<const ExpertOverlay> OverlayCache::ResidentLocked(const Key& key, std::vector<Demotion>* demote) {
  if (auto it = entries_.find(key); it != entries_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    ++hits_;
    return it->second.overlay;
  }
  if (auto it = held_.find(key); it != held_.end()) {
    std::shared_ptr<const ExpertOverlay> alive = it->second.overlay.lock();
    std::string sha = it->second.sha256;
    held_.erase(it);
    if (alive != nullptr) {
      ++hits_;
      ++readmissions_;
      AdmitLocked(key, alive, std::move(sha), demote);
      return alive;
    }
  }
  return nullptr;
}

std::shared_ptr<const ExpertOverlay> OverlayCache::TryAcquireResident(const std::string& tenant, int64_t version) {
  if (version < 1) return nullptr;
  std::vector<Demotion> demote;
  std::shared_ptr<const ExpertOverlay> out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    out = ResidentLocked(Key{tenant, version}, &demote);
  }
  Demote(std::move(demote));
  return out;
}

SlotAllocator OverlayCache::Allocator() {
  std::shared_ptr<OverlaySlabPool> pool;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pool = pool_;
  }
  if (pool == nullptr) return nullptr;
  return [this, pool]() -> absl::StatusOr<ExpertWeights> {
    absl::StatusOr<ExpertWeights> w = pool->Acquire();
    if (w.ok() || w.status().code() != absl::StatusCode::kResourceExhausted) return w;
    pool_overflow_slots_.fetch_add(1);
    return AllocateExpertWeights(config_, dtype_, backend_);
  };
}

absl::StatusOr<std::shared_ptr<const ExpertOverlay>> OverlayCache::Acquire(const std::string& tenant,
                                                                          int64_t version) {
  if (version < 1) {
    return absl::InvalidArgumentError(absl::StrCat("OverlayCache: version must be >= 1, got ", version));
  }
  const Key key{tenant, version};
  std::promise<Result> promise;
  std::shared_future<Result> pending;
  std::shared_ptr<const HostOverlay> promote;  // set: a host hit (promotion); null: a disk load
  std::vector<Demotion> demote;
  uint64_t epoch = 0;
  std::shared_ptr<const ExpertOverlay> resident;
  {
    std::lock_guard<std::mutex> lock(mu_);
    resident = ResidentLocked(key, &demote);
    if (resident == nullptr) {
      ++misses_;
      if (auto it = loading_.find(key); it != loading_.end()) {
        pending = it->second;
      } else {
        loading_.emplace(key, promise.get_future().share());
        epoch = tenant_epoch_[tenant];
        if (auto h = host_.find(key); h != host_.end()) {
          promote = h->second.copy;  // leaves the host tier: tiers are exclusive
          EraseHostLocked(h);
          ++host_hits_;
        } else {
          ++host_misses_;
        }
      }
    }
  }
  if (resident != nullptr) {
    Demote(std::move(demote));  // what a re-admission pushed out, copied outside the lock
    return resident;
  }
  if (pending.valid()) return pending.get();  // another thread's promotion/load of this key

  const SlotAllocator allocate = Allocator();
  Result result = [&]() -> Result {
    if (promote != nullptr) {
      std::unique_lock<std::mutex> device = DeviceLock();
      return promote->Upload(config_, backend_, allocate);
    }
    absl::StatusOr<VersionBlob> blob = source_->LoadVersion(tenant, version);
    if (!blob.ok()) return blob.status();
    std::unique_lock<std::mutex> device = DeviceLock();
    // An expert-only version is parsed; a LoRA version is merged into dense slot weights once, here,
    // and then served like any other overlay (see core/model/lora_overlay.h for why).
    return LoadVersionOverlay(config_, std::move(blob->safetensors_bytes), base_, backend_,
                              std::move(blob->sha256), dtype_, allocate);
  }();
  {
    std::lock_guard<std::mutex> lock(mu_);
    loading_.erase(key);
    const bool current = tenant_epoch_[tenant] == epoch;
    if (result.ok()) {
      ++(promote != nullptr ? promotions_ : loads_);
      if (current) AdmitLocked(key, *result, (*result)->digest(), &demote);
    } else if (promote != nullptr && current && entries_.count(key) == 0 && host_.count(key) == 0) {
      AdmitHostLocked(key, promote);  // the upload failed (device memory): the host copy stays
    }
  }
  promise.set_value(result);
  Demote(std::move(demote));
  return result;
}

std::unique_lock<std::mutex> OverlayCache::DeviceLock() const {
  if (backend_->device() == DeviceKind::kCpu) return std::unique_lock<std::mutex>();
  return std::unique_lock<std::mutex>(*device_mu_);
}

bool OverlayCache::IsLiveLocked(const Key& key) const {
  auto it = live_.find(key.first);
  return it != live_.end() && it->second == key.second;
}

void OverlayCache::AdmitLocked(const Key& key, std::shared_ptr<const ExpertOverlay> overlay, std::string sha256,
                               std::vector<Demotion>* demote) {
  PruneHeldLocked();
  const int64_t bytes = overlay->bytes();
  if (bytes > capacity_bytes_) {
    // Size-aware admission: it would not fit even alone. Served (the caller holds it), never resident;
    // on to the host tier unless a copy is there already.
    if (capacity_bytes_ > 0) ++not_admitted_;
    if (host_.count(key) == 0) demote->push_back(Demotion{key, overlay, tenant_epoch_[key.first]});
    held_[key] = Held{std::move(overlay), std::move(sha256), bytes};
    return;
  }
  if (auto h = host_.find(key); h != host_.end()) EraseHostLocked(h);  // tiers are exclusive
  Entry e;
  e.bytes = bytes;
  e.overlay = std::move(overlay);
  e.sha256 = std::move(sha256);
  lru_.push_front(LruNode{key, IsLiveLocked(key)});
  e.lru = lru_.begin();
  resident_bytes_ += e.bytes;
  entries_.emplace(key, std::move(e));
  EvictLocked(key, demote);
}

void OverlayCache::EvictLocked(const Key& protect, std::vector<Demotion>* demote) {
  while (resident_bytes_ > capacity_bytes_) {
    const LruNode* victim = PickVictim(lru_, protect);
    if (victim == nullptr) break;  // unreachable: `protect` alone fits (AdmitLocked)
    const Key key = victim->key;
    auto it = entries_.find(key);
    held_[key] = Held{it->second.overlay, it->second.sha256, it->second.bytes};
    demote->push_back(Demotion{key, std::move(it->second.overlay), tenant_epoch_[key.first]});
    resident_bytes_ -= it->second.bytes;
    lru_.erase(it->second.lru);
    entries_.erase(it);
    ++evictions_;
  }
}

void OverlayCache::AdmitHostLocked(const Key& key, std::shared_ptr<const HostOverlay> copy) {
  const int64_t bytes = copy->bytes();
  if (bytes > host_capacity_bytes_) {
    if (host_capacity_bytes_ > 0) ++not_admitted_;
    return;  // dropped: its next use reads the disk
  }
  host_lru_.push_front(LruNode{key, IsLiveLocked(key)});
  host_[key] = HostEntry{std::move(copy), bytes, host_lru_.begin()};
  host_bytes_ += bytes;
  while (host_bytes_ > host_capacity_bytes_) {
    const LruNode* victim = PickVictim(host_lru_, key);
    if (victim == nullptr) break;  // unreachable: `key` alone fits
    EraseHostLocked(host_.find(victim->key));
    ++host_evictions_;
  }
}

void OverlayCache::EraseHostLocked(std::map<Key, HostEntry>::iterator it) {
  host_bytes_ -= it->second.bytes;
  host_lru_.erase(it->second.lru);
  host_.erase(it);
}

void OverlayCache::Demote(std::vector<Demotion> demote) {
  for (Demotion& d : demote) {
    const int64_t bytes = d.overlay->bytes();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (bytes > host_capacity_bytes_) {
        if (host_capacity_bytes_ > 0) ++not_admitted_;
        continue;
      }
      // Back on the device (re-admitted meanwhile), already copied, or its tenant was forgotten.
      if (entries_.count(d.key) != 0 || host_.count(d.key) != 0 || tenant_epoch_[d.key.first] != d.epoch) continue;
    }
    absl::StatusOr<std::shared_ptr<const HostOverlay>> copy;
    {
      std::unique_lock<std::mutex> device = DeviceLock();
      copy = HostOverlay::FromDevice(*d.overlay, backend_);
    }
    d.overlay.reset();  // the device buffers go once no request holds them
    if (!copy.ok()) continue;  // not kept: its next use reads the disk
    std::lock_guard<std::mutex> lock(mu_);
    if (entries_.count(d.key) != 0 || host_.count(d.key) != 0 || tenant_epoch_[d.key.first] != d.epoch) continue;
    AdmitHostLocked(d.key, *std::move(copy));
    ++demotions_;
  }
}

void OverlayCache::PruneHeldLocked() {
  for (auto it = held_.begin(); it != held_.end();) {
    it = it->second.overlay.expired() ? held_.erase(it) : std::next(it);
  }
}

void OverlayCache::MarkLive(const std::string& tenant, int64_t version) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = live_.find(tenant); it != live_.end()) SetLiveFlagLocked({tenant, it->second}, false);
  if (version <= 0) {
    live_.erase(tenant);
  } else {
    live_[tenant] = version;
    SetLiveFlagLocked({tenant, version}, true);
  }
}

void OverlayCache::SetLiveFlagLocked(const Key& key, bool live) {
  if (auto it = entries_.find(key); it != entries_.end()) it->second.lru->live = live;
  if (auto it = host_.find(key); it != host_.end()) it->second.lru->live = live;
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
  for (auto it = host_.begin(); it != host_.end();) {
    if (it->first.first != tenant) {
      ++it;
      continue;
    }
    auto next = std::next(it);
    EraseHostLocked(it);
    it = next;
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
  for (const LruNode& node : lru_) {
    const Entry& e = entries_.at(node.key);
    s.resident.push_back({node.key.first, node.key.second, e.sha256, e.bytes, node.live});
  }
  for (const LruNode& node : host_lru_) {
    const HostEntry& e = host_.at(node.key);
    s.host.push_back({node.key.first, node.key.second, e.copy->digest(), e.bytes, node.live});
  }
  s.resident_bytes = resident_bytes_;
  for (const auto& [key, h] : held_) s.held_bytes += h.bytes;
  s.capacity_bytes = capacity_bytes_;
  s.host_bytes = host_bytes_;
  s.host_capacity_bytes = host_capacity_bytes_;
  s.loads = loads_;
  s.hits = hits_;
  s.misses = misses_;
  s.host_hits = host_hits_;
  s.host_misses = host_misses_;
  s.promotions = promotions_;
  s.demotions = demotions_;
  s.readmissions = readmissions_;
  s.evictions = evictions_;
  s.host_evictions = host_evictions_;
  s.not_admitted = not_admitted_;
  s.loads_in_flight = static_cast<int64_t>(loading_.size());
  if (pool_ != nullptr) {
    s.pool_slabs = pool_->slabs();
    s.pool_slabs_in_use = pool_->slabs_in_use();
  }
  s.pool_overflow_slots = pool_overflow_slots_.load();
  return s;
}

}  // namespace tessera::runtime
