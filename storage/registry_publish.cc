// Registry: the end of a successful fine-tuning job as ONE transaction (Registry::PublishJobVersion).
//
// Contract: the version row (+ its publish change and audit), the live-pointer move when promoting (+ its
// change and audit), the job's "version" event, and the job's RUNNING -> SUCCEEDED transition with
// result_version (+ its "state" event and audit) commit together with synchronous=FULL, or not at all.
// Before this existed they were three transactions, and a crash between the publish and the finish left
// a version whose job was still RUNNING: the lease expired, the job was retried and published a second
// version. Now a crash leaves either everything or nothing; with nothing, the job is still RUNNING under
// the dead worker's lease, is requeued when the lease expires, and the retry publishes the one version.
// The lease is checked inside the transaction, so a worker whose job was cancelled or requeued elsewhere
// writes nothing. A job that already has a version (written by a build that published and finished in
// separate transactions, then crashed) gets that version back instead of a second one.
//
// The crash points (core/util/crash_point.h) between the steps exist for tests/services/
// publish_crash_test.cc: an _exit there must leave the database as if the transaction never began.
#include "absl/strings/str_cat.h"
#include "core/util/crash_point.h"
#include "core/util/status_macros.h"
#include "storage/registry.h"
#include "storage/registry_internal.h"

namespace tessera::storage {

absl::StatusOr<PublishedJob> Registry::PublishJobVersion(const std::string& worker_id,
                                                         const NewVersion& version, bool promote,
                                                         const std::string& reason,
                                                         const std::string& actor) {
  if (version.job_id.empty()) return absl::InvalidArgumentError("PublishJobVersion needs version.job_id");
  if (worker_id.empty()) return absl::InvalidArgumentError("worker_id is empty");
  PublishedJob out;
  RETURN_IF_ERROR(pool_->Write(true, [&](Conn& c) -> absl::Status {
    out = PublishedJob();
    RETURN_IF_ERROR(internal::LockBlobReferences(c));  // first: InsertVersion's blob check races the GC
    ASSIGN_OR_RETURN(Job job, internal::LoadLeasedJob(c, version.job_id, worker_id));
    if (job.tenant_id != version.tenant_id) return internal::JobNotFound(version.job_id);
    ASSIGN_OR_RETURN(int64_t existing,
                     c.QueryInt("SELECT COALESCE(MIN(version), 0) FROM versions WHERE tenant_id = ?1 "
                                "AND job_id = ?2",
                                0, version.tenant_id, version.job_id));
    if (existing > 0) {
      out.reused = true;
      ASSIGN_OR_RETURN(Stmt st, c.Prepare(absl::StrCat("SELECT ", internal::kVersionColumns,
                                                       " FROM versions WHERE tenant_id = ?1 AND version = ?2"),
                                          version.tenant_id, existing));
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) return absl::InternalError("version vanished inside a write transaction");
      out.version = internal::ReadVersion(st);
    } else {
      ASSIGN_OR_RETURN(out.version, internal::InsertVersion(c, *blobs_, version, actor, quotas_));
    }
    util::CrashPoint("registry.publish_job.version_row");
    bool promoted = false;
    if (promote) {
      ASSIGN_OR_RETURN(LiveMove move, internal::PromoteInTxn(c, version.tenant_id, out.version.version, actor));
      promoted = true;
      if (move.changed) out.move = move;
      util::CrashPoint("registry.publish_job.live_moved");
    }
    RETURN_IF_ERROR(internal::AppendEvent(c, version.job_id, "version",
                                          absl::StrCat("{\"version\":", out.version.version,
                                                       ",\"promoted\":", promoted ? "true" : "false",
                                                       ",\"reason\":", internal::JsonString(reason), "}"))
                        .status());
    JobResult result;
    result.state = JobState::kSucceeded;
    result.result_version = out.version.version;
    result.promoted = promoted;
    ASSIGN_OR_RETURN(out.job, internal::FinishJobInTxn(c, version.job_id, worker_id, result));
    ASSIGN_OR_RETURN(int64_t live, c.QueryInt("SELECT live_version FROM tenants WHERE tenant_id = ?1", -1,
                                              version.tenant_id));
    out.version.live = live == out.version.version;
    util::CrashPoint("registry.publish_job.job_finished");
    return absl::OkStatus();
  }));
  NotifyWaiters();
  return out;
}

}  // namespace tessera::storage
