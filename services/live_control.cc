#include "services/live_control.h"

#include "absl/strings/str_cat.h"
#include "services/log.h"
#include "services/version_backbone.h"

namespace tessera::services {

std::mutex& LiveControl::TenantMutex(const std::string& tenant_id) {
  std::lock_guard<std::mutex> lock(map_mu_);
  auto& m = tenant_mu_[tenant_id];
  if (!m) m = std::make_unique<std::mutex>();
  return *m;
}

absl::Status LiveControl::Sync(const std::string& tenant_id, int64_t live) {
  if (engine_ == nullptr) return absl::OkStatus();
  absl::Status s = engine_->ServeLive(tenant_id, live);
  if (!s.ok()) {
    // The registry already moved: report honestly that the runtime has not caught up.
    LogError("runtime failed to serve the new live version",
             {{"tenant_id", tenant_id}, {"version", live}, {"error", s.ToString()}});
    return absl::Status(s.code(), absl::StrCat("the live pointer moved to version ", live,
                                               " but the runtime could not load it: ", s.message()));
  }
  std::lock_guard<std::mutex> lock(served_mu_);
  served_[tenant_id] = live;
  return absl::OkStatus();
}

void LiveControl::ForgetTenant(const std::string& tenant_id) {
  std::lock_guard<std::mutex> tenant(TenantMutex(tenant_id));
  if (engine_ != nullptr) engine_->ForgetTenant(tenant_id);
  std::lock_guard<std::mutex> lock(served_mu_);
  served_.erase(tenant_id);
}

absl::Status LiveControl::Resync(const std::string& tenant_id) {
  if (engine_ == nullptr) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(TenantMutex(tenant_id));
  absl::StatusOr<int64_t> live = registry_->GetLive(tenant_id);
  if (!live.ok()) return live.status();
  {
    std::lock_guard<std::mutex> served(served_mu_);
    auto it = served_.find(tenant_id);
    if (it != served_.end() && it->second == *live) return absl::OkStatus();
  }
  if (absl::Status s = Sync(tenant_id, *live); !s.ok()) return s;
  LogInfo("live version followed from the registry", {{"tenant_id", tenant_id}, {"to", *live}});
  return absl::OkStatus();
}

absl::StatusOr<storage::LiveMove> LiveControl::Promote(const std::string& tenant_id, int64_t version,
                                                       const std::string& actor) {
  std::lock_guard<std::mutex> lock(TenantMutex(tenant_id));
  if (version > 0) {
    if (absl::Status s = CheckVersionBackbone(*registry_, tenant_id, version, backbone_sha256_); !s.ok()) return s;
  }
  absl::StatusOr<storage::LiveMove> move = registry_->Promote(tenant_id, version, actor);
  if (!move.ok()) return move.status();
  if (absl::Status s = Sync(tenant_id, move->live_version); !s.ok()) return s;
  LogInfo("live version moved", {{"tenant_id", tenant_id}, {"kind", "promote"},
                                 {"from", move->previous_live}, {"to", move->live_version},
                                 {"actor", actor}});
  return move;
}

absl::StatusOr<storage::LiveMove> LiveControl::Rollback(const std::string& tenant_id,
                                                        std::optional<int64_t> to_version,
                                                        const std::string& actor) {
  std::lock_guard<std::mutex> lock(TenantMutex(tenant_id));
  if (to_version.has_value() && *to_version > 0) {
    if (absl::Status s = CheckVersionBackbone(*registry_, tenant_id, *to_version, backbone_sha256_); !s.ok()) {
      return s;
    }
  }
  absl::StatusOr<storage::LiveMove> move = registry_->Rollback(tenant_id, to_version, actor);
  if (!move.ok()) return move.status();
  if (absl::Status s = Sync(tenant_id, move->live_version); !s.ok()) return s;
  LogInfo("live version moved", {{"tenant_id", tenant_id}, {"kind", "rollback"},
                                 {"from", move->previous_live}, {"to", move->live_version},
                                 {"actor", actor}});
  return move;
}

}  // namespace tessera::services
