#include "services/live_control.h"

#include "absl/strings/str_cat.h"
#include "services/log.h"

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
  return absl::OkStatus();
}

absl::StatusOr<storage::LiveMove> LiveControl::Promote(const std::string& tenant_id, int64_t version,
                                                       const std::string& actor) {
  std::lock_guard<std::mutex> lock(TenantMutex(tenant_id));
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
  absl::StatusOr<storage::LiveMove> move = registry_->Rollback(tenant_id, to_version, actor);
  if (!move.ok()) return move.status();
  if (absl::Status s = Sync(tenant_id, move->live_version); !s.ok()) return s;
  LogInfo("live version moved", {{"tenant_id", tenant_id}, {"kind", "rollback"},
                                 {"from", move->previous_live}, {"to", move->live_version},
                                 {"actor", actor}});
  return move;
}

}  // namespace tessera::services
