#include "services/stream_limiter.h"

#include "absl/strings/str_cat.h"

namespace tessera::services {

StreamSlot& StreamSlot::operator=(StreamSlot&& o) noexcept {
  if (this != &o) {
    Release();
    owner_ = o.owner_;
    tenant_ = std::move(o.tenant_);
    o.owner_ = nullptr;
  }
  return *this;
}

void StreamSlot::Release() {
  if (owner_ == nullptr) return;
  owner_->Release(tenant_);
  owner_ = nullptr;
}

absl::StatusOr<StreamSlot> StreamLimiter::Acquire(const std::string& tenant, const char* kind) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t mine = counts_.by_tenant.count(tenant) ? counts_.by_tenant[tenant] : 0;
  if (max_per_tenant_ > 0 && mine >= max_per_tenant_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        kind, ": tenant '", tenant, "' already has ", mine, " open streams, its limit (--max-streams-per-tenant ",
        max_per_tenant_, "); close one (or let one finish) and retry"));
  }
  if (max_total_ > 0 && counts_.total >= max_total_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        kind, ": the server already has ", counts_.total, " open streams, its limit (--max-streams ", max_total_,
        "); retry later"));
  }
  ++counts_.total;
  ++counts_.by_tenant[tenant];
  return StreamSlot(this, tenant);
}

void StreamLimiter::Release(const std::string& tenant) {
  std::lock_guard<std::mutex> lock(mu_);
  --counts_.total;
  auto it = counts_.by_tenant.find(tenant);
  if (it != counts_.by_tenant.end() && --it->second <= 0) counts_.by_tenant.erase(it);
}

StreamCounts StreamLimiter::Counts() {
  std::lock_guard<std::mutex> lock(mu_);
  return counts_;
}

}  // namespace tessera::services
