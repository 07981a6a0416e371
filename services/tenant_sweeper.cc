#include "services/tenant_sweeper.h"

#include <set>

#include "absl/time/clock.h"
#include "services/log.h"

namespace tessera::services {

TenantSweeper::TenantSweeper(storage::Registry* registry, Options options)
    : registry_(registry), options_(std::move(options)) {
  if (options_.interval <= absl::ZeroDuration()) options_.interval = absl::Seconds(2);
}

TenantSweeper::~TenantSweeper() { Stop(); }

void TenantSweeper::Start() {
  thread_ = std::thread([this] {
    absl::Time next_error_log = absl::InfinitePast();
    for (;;) {
      absl::StatusOr<Round> round = SweepOnce();
      if (!round.ok() && absl::Now() >= next_error_log) {
        LogError("checking for deleted tenants failed", {{"error", round.status().ToString()}});
        next_error_log = absl::Now() + absl::Seconds(30);
      }
      std::unique_lock<std::mutex> lock(stop_mu_);
      if (stop_cv_.wait_for(lock, absl::ToChronoMilliseconds(options_.interval), [this] { return stopping_; })) return;
    }
  });
}

void TenantSweeper::Stop() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<TenantSweeper::Round> TenantSweeper::SweepOnce() {
  std::lock_guard<std::mutex> lock(round_mu_);
  absl::StatusOr<std::vector<storage::Tenant>> tenants = registry_->ListTenants();
  if (!tenants.ok()) return tenants.status();
  std::map<std::string, int64_t> now;
  for (const storage::Tenant& t : *tenants) now[t.tenant_id] = t.created_at_us;
  Round round;
  for (const auto& [id, created] : known_) {
    auto it = now.find(id);
    if (it == now.end() || it->second != created) round.deleted.push_back(id);
  }
  known_ = std::move(now);
  for (const std::string& id : round.deleted) {
    LogInfo("tenant deleted on the control plane: forgotten here", {{"tenant_id", id}});
    if (options_.on_deleted) options_.on_deleted(id);
  }
  tenants_forgotten_.fetch_add(static_cast<int64_t>(round.deleted.size()));
  if (options_.cache != nullptr && (first_round_ || !round.deleted.empty())) {
    absl::StatusOr<int64_t> pruned = PruneCache();
    if (!pruned.ok()) return pruned.status();  // retried on the next deletion (or restart)
    round.cache_pruned = *pruned;
  }
  first_round_ = false;
  return round;
}

absl::StatusOr<int64_t> TenantSweeper::PruneCache() {
  absl::StatusOr<std::vector<std::string>> cached = options_.cache->ListDigests();
  if (!cached.ok()) return cached.status();
  if (cached->empty()) return 0;
  absl::StatusOr<std::set<std::string>> referenced = registry_->ReferencedBlobs(*cached);
  if (!referenced.ok()) return referenced.status();
  const absl::Time cutoff = absl::Now() - options_.cache_grace;
  int64_t pruned = 0;
  for (const std::string& digest : *cached) {
    if (referenced->count(digest)) continue;
    absl::StatusOr<absl::Time> written = options_.cache->LastWritten(digest);
    if (!written.ok() || *written > cutoff) continue;
    if (absl::Status s = options_.cache->Delete(digest); !s.ok() && !absl::IsNotFound(s)) return s;
    ++pruned;
  }
  if (pruned > 0) LogInfo("blob cache pruned", {{"blobs_deleted", pruned}});
  cache_pruned_.fetch_add(pruned);
  return pruned;
}

}  // namespace tessera::services
