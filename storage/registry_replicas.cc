// Registry: the replica table (migration 11). Each following process rewrites its own row every
// heartbeat with the change-feed sequence it has applied; the control plane reads them all to learn
// which replicas serve a live-pointer move yet. One row per process, one writer per row: no contention
// beyond the row itself, and a crashed process's row simply stops being refreshed.
#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"
#include "storage/registry.h"
#include "storage/registry_internal.h"

namespace tessera::storage {

absl::Status Registry::HeartbeatReplica(const Replica& r) {
  if (r.replica_id.empty()) return absl::InvalidArgumentError("replica_id: required");
  if (r.role.empty()) return absl::InvalidArgumentError("role: required");
  const int64_t now = NowMicros();
  return pool_->Write(false, [&](Conn& c) -> absl::Status {
    return c.Exec(
        "INSERT INTO replicas(replica_id, role, address, applied_seq, started_at_us, heartbeat_at_us) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(replica_id) DO UPDATE SET role = excluded.role, "
        "address = excluded.address, applied_seq = excluded.applied_seq, started_at_us = excluded.started_at_us, "
        "heartbeat_at_us = excluded.heartbeat_at_us",
        r.replica_id, r.role, r.address, r.applied_seq, r.started_at_us > 0 ? r.started_at_us : now, now);
  });
}

absl::StatusOr<std::vector<Replica>> Registry::ListReplicas() {
  std::vector<Replica> out;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    out.clear();
    ASSIGN_OR_RETURN(Stmt st, c.Prepare("SELECT replica_id, role, address, applied_seq, started_at_us, "
                                        "heartbeat_at_us FROM replicas ORDER BY replica_id"));
    for (;;) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      Replica r;
      r.replica_id = st.Text(0);
      r.role = st.Text(1);
      r.address = st.Text(2);
      r.applied_seq = st.Int(3);
      r.started_at_us = st.Int(4);
      r.heartbeat_at_us = st.Int(5);
      out.push_back(std::move(r));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::Status Registry::RemoveReplica(const std::string& replica_id) {
  return pool_->Write(false, [&](Conn& c) { return c.Exec("DELETE FROM replicas WHERE replica_id = ?1", replica_id); });
}

}  // namespace tessera::storage
