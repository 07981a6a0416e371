// Registry: immutable expert versions, live pointers (promote / rollback as an undo stack, see
// registry.h) and the global change feed. Commits here use synchronous=FULL.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "storage/sv.h"
#include "core/util/status_macros.h"
#include "storage/registry.h"
#include "storage/registry_internal.h"

namespace tessera::storage {
namespace {

struct LiveState {
  int64_t version = 0;
  int64_t seq = 0;  // change that made it live; 0 = never moved
};

absl::StatusOr<LiveState> LoadLive(Conn& c, const std::string& tenant_id) {
  ASSIGN_OR_RETURN(Stmt st, c.Prepare("SELECT live_version, live_seq FROM tenants WHERE tenant_id = ?1",
                                      tenant_id));
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("tenant '", tenant_id, "' not found"));
  return LiveState{st.Int(0), st.Int(1)};
}

absl::Status RequireVersion(Conn& c, const std::string& tenant_id, int64_t version) {
  if (version == 0) return absl::OkStatus();  // the base always exists
  if (version < 0) {
    return absl::InvalidArgumentError(absl::StrCat("version must be >= 0, got ", version));
  }
  ASSIGN_OR_RETURN(int64_t n, c.QueryInt("SELECT COUNT(*) FROM versions WHERE tenant_id = ?1 AND "
                                         "version = ?2",
                                         0, tenant_id, version));
  if (n == 0) return internal::VersionNotFound(tenant_id, version);
  return absl::OkStatus();
}

// Appends a row to the change feed; returns its seq. SQLite: AUTOINCREMENT (the single writer commits
// in seq order). PostgreSQL: the change_seq counter row, updated in this transaction, so a later seq is
// never visible before an earlier one (see migrations.cc).
absl::StatusOr<int64_t> InsertChange(Conn& c, const std::string& tenant_id, ChangeKind kind, int64_t version,
                                     int64_t live_version, int64_t previous_live, std::optional<int64_t> undo_seq,
                                     const std::string& actor, int64_t created_at_us) {
  const char* sql =
      c.dialect() == Dialect::kPostgres
          ? "WITH n AS (UPDATE change_seq SET seq = seq + 1 WHERE id = 1 RETURNING seq) "
            "INSERT INTO changes(seq, tenant_id, kind, version, live_version, previous_live, undo_seq, actor, "
            "created_at_us) SELECT n.seq, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 FROM n RETURNING seq"
          : "INSERT INTO changes(tenant_id, kind, version, live_version, previous_live, undo_seq, actor, "
            "created_at_us) VALUES (?1,?2,?3,?4,?5,?6,?7,?8) RETURNING seq";
  ASSIGN_OR_RETURN(Stmt st, c.Prepare(sql, tenant_id, ChangeKindName(kind), version, live_version, previous_live,
                                      undo_seq, actor, created_at_us));
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return absl::InternalError("change feed insert returned no seq");
  const int64_t seq = st.Int(0);
  RETURN_IF_ERROR(st.Run());
  return seq;
}

// Writes a live-pointer move: the change row (with its undo link), the tenant's pointer, the audit.
absl::StatusOr<LiveMove> MoveLive(Conn& c, const std::string& tenant_id, const LiveState& from,
                                  int64_t to_version, std::optional<int64_t> undo_seq,
                                  ChangeKind kind, const std::string& actor) {
  ASSIGN_OR_RETURN(int64_t seq, InsertChange(c, tenant_id, kind, to_version, to_version, from.version, undo_seq,
                                              actor.empty() ? std::string("system") : actor, NowMicros()));
  RETURN_IF_ERROR(c.Exec("UPDATE tenants SET live_version = ?2, live_seq = ?3 WHERE tenant_id = ?1",
                         tenant_id, to_version, seq));
  RETURN_IF_ERROR(internal::AppendAudit(
      c, actor, kind == ChangeKind::kPromote ? "version.promote" : "version.rollback",
      absl::StrCat("tenant/", tenant_id, "/version/", to_version),
      absl::StrCat("{\"previous_live\":", from.version, ",\"live\":", to_version, ",\"seq\":", seq,
                   "}")));
  return LiveMove{tenant_id, from.version, to_version, true, seq};
}

// AUTOINCREMENT's high-water mark (PostgreSQL: the change_seq counter) rather than MAX(seq): DeleteTenant
// removes the tenant's change rows, and the sequence a follower has seen must never appear to go backwards.
absl::StatusOr<int64_t> CurrentSeq(Conn& c) {
  if (c.dialect() == Dialect::kPostgres) return c.QueryInt("SELECT seq FROM change_seq WHERE id = 1", 0);
  return c.QueryInt("SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0), "
                    "COALESCE((SELECT MAX(seq) FROM changes), 0))",
                    0);
}

}  // namespace

namespace internal {

absl::StatusOr<ExpertVersion> InsertVersion(Conn& c, BlobBackend& blobs, const NewVersion& in,
                                            const std::string& actor, const QuotaPolicy& quotas) {
  RETURN_IF_ERROR(ValidateTenantId(in.tenant_id));
  if (!BlobStore::IsValidDigest(in.blob_digest)) {
    return absl::InvalidArgumentError(
        absl::StrCat("version blob_digest '", in.blob_digest, "' is not a sha256 hex digest"));
  }
  if (in.parent_version < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("parent_version must be >= 0, got ", in.parent_version));
  }
  ASSIGN_OR_RETURN(LiveState live, LoadLive(c, in.tenant_id));
  RETURN_IF_ERROR(RequireVersion(c, in.tenant_id, in.parent_version));
  if (!in.job_id.empty()) RETURN_IF_ERROR(internal::LoadJob(c, in.tenant_id, in.job_id).status());
  // Checked inside the write transaction so it serializes with the garbage collector.
  absl::StatusOr<int64_t> size = blobs.Size(in.blob_digest);
  if (absl::IsNotFound(size.status())) {
    return absl::FailedPreconditionError(
        absl::StrCat("version blob ", in.blob_digest, " is not in the blob store"));
  }
  if (!size.ok()) return size.status();
  RETURN_IF_ERROR(CheckVersionQuota(c, in.tenant_id, quotas, *size));
  ASSIGN_OR_RETURN(int64_t last, c.QueryInt("SELECT MAX(version) FROM versions WHERE tenant_id = ?1",
                                            0, in.tenant_id));
  ExpertVersion v{in.tenant_id, last + 1,     in.parent_version, in.job_id, in.slots_json,
                  in.val_loss,  in.base_val_loss, in.blob_digest, *size,    NowMicros(),
                  false,        in.backbone_sha256};
  v.method = in.method;
  v.lora_rank = in.lora_rank;
  v.general_loss = in.general_loss;
  v.base_general_loss = in.base_general_loss;
  v.promotion_decision = in.promotion_decision;
  v.promotion_reason = in.promotion_reason;
  RETURN_IF_ERROR(c.Exec("INSERT INTO versions(tenant_id, version, parent_version, job_id, "
                         "slots_json, val_loss, base_val_loss, blob_digest, size_bytes, "
                         "created_at_us, backbone_sha256, method, lora_rank, general_loss, base_general_loss, "
                         "promotion_decision, promotion_reason) "
                         "VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)",
                         v.tenant_id, v.version, v.parent_version, v.job_id, v.slots_json,
                         v.val_loss, v.base_val_loss, v.sha256, v.size_bytes, v.created_at_us,
                         v.backbone_sha256, v.method, v.lora_rank, v.general_loss, v.base_general_loss,
                         v.promotion_decision, v.promotion_reason));
  RETURN_IF_ERROR(InsertChange(c, v.tenant_id, ChangeKind::kPublish, v.version, live.version, live.version,
                               std::nullopt, actor.empty() ? std::string("system") : actor, v.created_at_us)
                      .status());
  RETURN_IF_ERROR(internal::AppendAudit(
      c, actor, "version.publish", absl::StrCat("tenant/", v.tenant_id, "/version/", v.version),
      absl::StrCat("{\"sha256\":\"", v.sha256, "\",\"parent_version\":", v.parent_version,
                   ",\"job_id\":", internal::JsonString(v.job_id),
                   ",\"backbone_sha256\":", internal::JsonString(v.backbone_sha256), "}")));
  return v;
}

absl::StatusOr<LiveMove> PromoteInTxn(Conn& c, const std::string& tenant_id, int64_t version,
                                      const std::string& actor) {
  ASSIGN_OR_RETURN(LiveState live, LoadLive(c, tenant_id));
  RETURN_IF_ERROR(RequireVersion(c, tenant_id, version));
  if (live.version == version) {
    ASSIGN_OR_RETURN(int64_t seq, CurrentSeq(c));
    return LiveMove{tenant_id, live.version, live.version, false, seq};
  }
  return MoveLive(c, tenant_id, live, version, live.seq, ChangeKind::kPromote, actor);
}

}  // namespace internal

absl::StatusOr<ExpertVersion> Registry::PublishVersion(const NewVersion& in,
                                                       const std::string& actor) {
  ExpertVersion v;
  RETURN_IF_ERROR(pool_->Write(true, [&](Conn& c) -> absl::Status {
    RETURN_IF_ERROR(internal::LockBlobReferences(c));  // first: InsertVersion's blob check races the GC
    ASSIGN_OR_RETURN(v, internal::InsertVersion(c, *blobs_, in, actor, quotas_));
    return absl::OkStatus();
  }));
  NotifyWaiters();
  return v;
}

absl::StatusOr<ExpertVersion> Registry::GetVersion(const std::string& tenant_id, int64_t version) {
  if (version < 1) {
    return absl::InvalidArgumentError(absl::StrCat("version must be >= 1, got ", version));
  }
  ExpertVersion v;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    ASSIGN_OR_RETURN(Stmt st, c.Prepare(absl::StrCat("SELECT ", internal::kVersionColumns,
                                                     ", (SELECT live_version FROM tenants t WHERE "
                                                     "t.tenant_id = v.tenant_id) FROM versions v "
                                                     "WHERE tenant_id = ?1 AND version = ?2"),
                                        tenant_id, version));
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return internal::VersionNotFound(tenant_id, version);
    v = internal::ReadVersion(st);
    v.live = st.Int(internal::kNumVersionColumns) == v.version;
    return absl::OkStatus();
  }));
  return v;
}

absl::StatusOr<std::vector<ExpertVersion>> Registry::ListVersions(const std::string& tenant_id) {
  std::vector<ExpertVersion> out;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    out.clear();
    ASSIGN_OR_RETURN(LiveState live, LoadLive(c, tenant_id));
    ASSIGN_OR_RETURN(Stmt st, c.Prepare(absl::StrCat("SELECT ", internal::kVersionColumns,
                                                     " FROM versions WHERE tenant_id = ?1 "
                                                     "ORDER BY version DESC"),
                                        tenant_id));
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      out.push_back(internal::ReadVersion(st));
      out.back().live = out.back().version == live.version;
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<LiveMove> Registry::Promote(const std::string& tenant_id, int64_t version,
                                           const std::string& actor) {
  LiveMove move;
  RETURN_IF_ERROR(pool_->Write(true, [&](Conn& c) -> absl::Status {
    ASSIGN_OR_RETURN(move, internal::PromoteInTxn(c, tenant_id, version, actor));
    return absl::OkStatus();
  }));
  if (move.changed) NotifyWaiters();
  return move;
}

absl::StatusOr<LiveMove> Registry::Rollback(const std::string& tenant_id,
                                            std::optional<int64_t> to_version,
                                            const std::string& actor) {
  LiveMove move;
  RETURN_IF_ERROR(pool_->Write(true, [&](Conn& c) -> absl::Status {
    ASSIGN_OR_RETURN(LiveState live, LoadLive(c, tenant_id));
    int64_t target = 0;
    std::optional<int64_t> new_undo;
    if (to_version.has_value()) {
      RETURN_IF_ERROR(RequireVersion(c, tenant_id, *to_version));
      target = *to_version;
      new_undo = live.seq;  // a later plain Rollback undoes this jump
    } else {
      // Walk the undo link of the current state (see the changes table in migrations.cc).
      std::optional<int64_t> undo;
      if (live.seq > 0) {
        ASSIGN_OR_RETURN(Stmt st, c.Prepare("SELECT undo_seq FROM changes WHERE seq = ?1", live.seq));
        ASSIGN_OR_RETURN(bool row, st.Step());
        if (row) undo = st.OptInt(0);
      }
      if (!undo.has_value()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "tenant '", tenant_id, "' has no previous live version to roll back to (live version ",
            live.version, ")"));
      }
      if (*undo == 0) {
        target = 0;
        new_undo = std::nullopt;
      } else {
        ASSIGN_OR_RETURN(Stmt st, c.Prepare("SELECT live_version, undo_seq FROM changes WHERE seq = ?1",
                                            *undo));
        ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) return absl::InternalError(absl::StrCat("live history entry ", *undo, " missing"));
        target = st.Int(0);
        new_undo = st.OptInt(1);
      }
    }
    if (target == live.version) {
      ASSIGN_OR_RETURN(int64_t seq, CurrentSeq(c));
      move = LiveMove{tenant_id, live.version, live.version, false, seq};
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(move, MoveLive(c, tenant_id, live, target, new_undo, ChangeKind::kRollback,
                                    actor));
    return absl::OkStatus();
  }));
  if (move.changed) NotifyWaiters();
  return move;
}

absl::StatusOr<int64_t> Registry::GetLive(const std::string& tenant_id) {
  int64_t live = -1;
  RETURN_IF_ERROR(pool_->Raw([&](Conn& c) -> absl::Status {
    // One statement is its own consistent snapshot: no explicit transaction needed.
    ASSIGN_OR_RETURN(live, c.QueryInt("SELECT live_version FROM tenants WHERE tenant_id = ?1", -1,
                                      tenant_id));
    return absl::OkStatus();
  }));
  if (live < 0) return absl::NotFoundError(absl::StrCat("tenant '", tenant_id, "' not found"));
  return live;
}

absl::StatusOr<std::vector<Change>> Registry::ListLiveHistory(const std::string& tenant_id,
                                                              int limit) {
  std::vector<Change> out;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    out.clear();
    RETURN_IF_ERROR(internal::RequireTenant(c, tenant_id));
    ASSIGN_OR_RETURN(Stmt st, c.Prepare(absl::StrCat("SELECT ", internal::kChangeColumns,
                                                     " FROM changes WHERE tenant_id = ?1 AND kind "
                                                     "IN ('promote', 'rollback') ORDER BY seq DESC "
                                                     "LIMIT ?2"),
                                        tenant_id, internal::SqlLimit(limit)));
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      out.push_back(internal::ReadChange(st));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<int64_t> Registry::ChangeSequence() {
  int64_t seq = 0;
  RETURN_IF_ERROR(pool_->Raw([&](Conn& c) -> absl::Status {
    ASSIGN_OR_RETURN(seq, CurrentSeq(c));
    return absl::OkStatus();
  }));
  return seq;
}

absl::StatusOr<std::vector<Change>> Registry::ListChangesSince(int64_t after_seq, int limit) {
  std::vector<Change> out;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    out.clear();
    ASSIGN_OR_RETURN(Stmt st, c.Prepare(absl::StrCat("SELECT ", internal::kChangeColumns,
                                                     " FROM changes WHERE seq > ?1 ORDER BY seq "
                                                     "LIMIT ?2"),
                                        after_seq, internal::SqlLimit(limit)));
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      out.push_back(internal::ReadChange(st));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<bool> Registry::WaitForChange(int64_t after_seq, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    uint64_t epoch;
    {
      std::lock_guard<std::mutex> lock(wait_mu_);
      epoch = wait_epoch_;
    }
    ASSIGN_OR_RETURN(int64_t seq, ChangeSequence());
    if (seq > after_seq) return true;
    const absl::Time now = absl::Now();
    if (now >= deadline) return false;
    const absl::Time wake = std::min(deadline, now + options_.wait_poll_interval);
    std::unique_lock<std::mutex> lock(wait_mu_);
    wait_cv_.wait_for(lock, absl::ToChronoNanoseconds(wake - now),
                      [&] { return wait_epoch_ != epoch; });
  }
}

}  // namespace tessera::storage
