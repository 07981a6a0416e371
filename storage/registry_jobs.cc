// Registry: jobs, the durable job queue (fair claim, leases) and job events.
// Every state change goes through internal::TransitionJob (the state machine in types.cc).
#include <algorithm>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "storage/sv.h"
#include "core/util/status_macros.h"
#include "storage/registry.h"
#include "storage/registry_internal.h"

namespace tessera::storage {
namespace {

absl::Status ValidateWorker(const std::string& worker_id, absl::Duration lease) {
  if (worker_id.empty()) return absl::InvalidArgumentError("worker_id is empty");
  if (lease <= absl::ZeroDuration()) return absl::InvalidArgumentError("lease must be positive");
  return absl::OkStatus();
}

}  // namespace

namespace internal {

absl::StatusOr<Job> LoadLeasedJob(Conn& c, const std::string& job_id, const std::string& worker_id) {
  ASSIGN_OR_RETURN(Job job, LoadJob(c, "", job_id));
  if (job.state != JobState::kRunning) {
    return absl::FailedPreconditionError(
        absl::StrCat("job '", job_id, "' is ", Sv(JobStateName(job.state)), ", not RUNNING"));
  }
  if (job.lease_owner != worker_id) {
    return absl::FailedPreconditionError(
        absl::StrCat("job '", job_id, "' is leased to another worker, not '", worker_id, "'"));
  }
  return job;
}

absl::StatusOr<Job> FinishJobInTxn(Conn& c, const std::string& job_id, const std::string& worker_id,
                                   const JobResult& result) {
  ASSIGN_OR_RETURN(Job current, LoadLeasedJob(c, job_id, worker_id));
  if (result.result_version.has_value()) {
    ASSIGN_OR_RETURN(int64_t n, c.QueryInt("SELECT COUNT(*) FROM versions WHERE tenant_id = ?1 "
                                           "AND version = ?2",
                                           0, current.tenant_id, *result.result_version));
    if (n == 0) return VersionNotFound(current.tenant_id, *result.result_version);
  }
  RETURN_IF_ERROR(c.Exec("UPDATE jobs SET result_version = ?2, promoted = ?3 WHERE job_id = ?1",
                         job_id, result.result_version, result.promoted));
  RETURN_IF_ERROR(TransitionJob(c, current, result.state, result.error).status());
  RETURN_IF_ERROR(AppendAudit(c, worker_id, "job.finish", absl::StrCat("job/", job_id),
                              absl::StrCat("{\"state\":\"", Sv(JobStateName(result.state)), "\"}")));
  return LoadJob(c, "", job_id);
}

}  // namespace internal

absl::StatusOr<Job> Registry::CreateJob(const NewJob& in, const std::string& actor) {
  RETURN_IF_ERROR(ValidateTenantId(in.tenant_id));
  if (in.training_dataset_id.empty()) {
    return absl::InvalidArgumentError("training_dataset_id is empty");
  }
  if (in.max_steps < 0) return absl::InvalidArgumentError("max_steps must be >= 0");
  ASSIGN_OR_RETURN(std::string id, internal::NewId("job_"));
  Job job;
  bool created = false;
  RETURN_IF_ERROR(pool_->Write(false, [&](Conn& c) -> absl::Status {
    created = false;
    RETURN_IF_ERROR(internal::RequireTenant(c, in.tenant_id));
    if (!in.idempotency_key.empty()) {
      ASSIGN_OR_RETURN(Stmt st, c.Prepare("SELECT job_id FROM jobs WHERE tenant_id = ?1 AND "
                                          "idempotency_key = ?2",
                                          in.tenant_id, in.idempotency_key));
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (row) {
        ASSIGN_OR_RETURN(job, internal::LoadJob(c, in.tenant_id, st.Text(0)));
        return absl::OkStatus();
      }
    }
    for (const std::string* ds : {&in.training_dataset_id, &in.validation_dataset_id}) {
      if (ds->empty()) continue;
      ASSIGN_OR_RETURN(int64_t n, c.QueryInt("SELECT COUNT(*) FROM datasets WHERE dataset_id = ?1 "
                                             "AND tenant_id = ?2",
                                             0, *ds, in.tenant_id));
      if (n == 0) return internal::DatasetNotFound(*ds);
    }
    RETURN_IF_ERROR(internal::CheckJobQuota(c, in.tenant_id, quotas_));
    std::optional<std::string> key;
    if (!in.idempotency_key.empty()) key = in.idempotency_key;
    RETURN_IF_ERROR(c.Exec("INSERT INTO jobs(job_id, tenant_id, spec, training_dataset_id, "
                           "validation_dataset_id, idempotency_key, state, created_at_us, "
                           "max_steps, request, suffix) VALUES (?1,?2,?3,?4,?5,?6,'QUEUED',?7,?8,?9,?10)",
                           id, in.tenant_id, in.spec, in.training_dataset_id,
                           in.validation_dataset_id, key, NowMicros(), in.max_steps, in.request, in.suffix));
    RETURN_IF_ERROR(internal::AppendEvent(c, id, "state", "{\"state\":\"QUEUED\"}").status());
    RETURN_IF_ERROR(internal::AppendAudit(c, actor, "job.create", absl::StrCat("job/", id),
                                          absl::StrCat("{\"tenant_id\":",
                                                       internal::JsonString(in.tenant_id), "}")));
    ASSIGN_OR_RETURN(job, internal::LoadJob(c, in.tenant_id, id));
    created = true;
    return absl::OkStatus();
  }));
  if (created) NotifyWaiters();
  return job;
}

absl::StatusOr<std::optional<Job>> Registry::FindJobByIdempotencyKey(const std::string& tenant_id,
                                                                     const std::string& idempotency_key) {
  std::optional<Job> out;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    out.reset();
    ASSIGN_OR_RETURN(Stmt st, c.Prepare(absl::StrCat("SELECT ", internal::kJobColumns,
                                                     " FROM jobs WHERE tenant_id = ?1 AND idempotency_key = ?2"),
                                        tenant_id, idempotency_key));
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (row) out = internal::ReadJob(st);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<Job> Registry::GetJob(const std::string& tenant_id, const std::string& job_id) {
  Job job;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    ASSIGN_OR_RETURN(job, internal::LoadJob(c, tenant_id, job_id));
    return absl::OkStatus();
  }));
  return job;
}

absl::StatusOr<JobPage> Registry::ListJobs(const std::string& tenant_id, int page_size,
                                           const std::string& page_token) {
  if (page_size <= 0) page_size = 50;
  page_size = std::min(page_size, 1000);
  int64_t before = INT64_MAX;
  if (!page_token.empty()) {
    if (page_token[0] != 'j' || !absl::SimpleAtoi(page_token.substr(1), &before) || before <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("page_token '", page_token, "' is invalid"));
    }
  }
  JobPage page;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    page = JobPage();
    if (!tenant_id.empty()) RETURN_IF_ERROR(internal::RequireTenant(c, tenant_id));
    ASSIGN_OR_RETURN(Stmt st, c.Prepare(absl::StrCat("SELECT ", internal::kJobColumns,
                                                     ", id FROM jobs WHERE (?1 = '' OR tenant_id = "
                                                     "?1) AND id < ?2 ORDER BY id DESC LIMIT ?3"),
                                        tenant_id, before, static_cast<int64_t>(page_size + 1)));
    int64_t last_id = 0;
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      if (static_cast<int>(page.jobs.size()) == page_size) {
        page.next_page_token = absl::StrCat("j", last_id);
        break;
      }
      page.jobs.push_back(internal::ReadJob(st));
      last_id = st.Int(internal::kJobColumnCount);
    }
    return absl::OkStatus();
  }));
  return page;
}

absl::StatusOr<Job> Registry::CancelJob(const std::string& tenant_id, const std::string& job_id,
                                        const std::string& actor) {
  Job job;
  RETURN_IF_ERROR(pool_->Write(false, [&](Conn& c) -> absl::Status {
    ASSIGN_OR_RETURN(Job current, internal::LoadJob(c, tenant_id, job_id));
    RETURN_IF_ERROR(
        internal::TransitionJob(c, current, JobState::kCancelled,
                                absl::StrCat("cancelled by ", actor.empty() ? "system" : actor))
            .status());
    RETURN_IF_ERROR(internal::AppendAudit(c, actor, "job.cancel", absl::StrCat("job/", job_id),
                                          absl::StrCat("{\"previous_state\":\"",
                                                       Sv(JobStateName(current.state)), "\"}")));
    ASSIGN_OR_RETURN(job, internal::LoadJob(c, "", job_id));
    return absl::OkStatus();
  }));
  NotifyWaiters();
  return job;
}

absl::StatusOr<int64_t> Registry::CountJobs(const std::string& tenant_id, JobState state) {
  int64_t n = 0;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    ASSIGN_OR_RETURN(n, c.QueryInt("SELECT COUNT(*) FROM jobs WHERE state = ?1 AND (?2 = '' OR "
                                   "tenant_id = ?2)",
                                   0, JobStateName(state), tenant_id));
    return absl::OkStatus();
  }));
  return n;
}

// ---- Queue --------------------------------------------------------------------------------------

absl::StatusOr<std::optional<Job>> Registry::ClaimNextJob(const std::string& worker_id,
                                                          absl::Duration lease) {
  RETURN_IF_ERROR(ValidateWorker(worker_id, lease));
  std::optional<Job> claimed;
  RETURN_IF_ERROR(pool_->Write(false, [&](Conn& c) -> absl::Status {
    claimed.reset();
    // Fairness: fewest RUNNING jobs first, then the tenant served longest ago (never served first).
    // Tenants already running their max_running_jobs (override, else the default; 0 = unlimited) wait:
    // the same order over the tenants still under their limit. (No overrides below migration 12.)
    const char* limit = quotas_.overrides ? "COALESCE(l.max_running_jobs, ?1)" : "?1";
    ASSIGN_OR_RETURN(
        Stmt pick,
        c.Prepare(absl::StrCat("SELECT q.tenant_id FROM (SELECT DISTINCT tenant_id FROM jobs WHERE state = 'QUEUED') q "
                               "LEFT JOIN queue_turns t ON t.tenant_id = q.tenant_id ",
                               quotas_.overrides ? "LEFT JOIN tenant_quotas l ON l.tenant_id = q.tenant_id " : "",
                               "WHERE ", limit, " = 0 OR (SELECT COUNT(*) FROM jobs r WHERE r.state = 'RUNNING' AND "
                               "r.tenant_id = q.tenant_id) < ", limit,
                               " ORDER BY (SELECT COUNT(*) FROM jobs r WHERE r.state = 'RUNNING' AND r.tenant_id = "
                               "q.tenant_id), COALESCE(t.last_claim, 0), q.tenant_id LIMIT 1"),
                  quotas_.defaults[Quota::kMaxRunningJobs]));
    ASSIGN_OR_RETURN(bool any, pick.Step());
    if (!any) return absl::OkStatus();
    const std::string tenant = pick.Text(0);
    ASSIGN_OR_RETURN(Stmt oldest,
                     c.Prepare("SELECT job_id FROM jobs WHERE state = 'QUEUED' AND tenant_id = ?1 "
                               "ORDER BY id LIMIT 1",
                               tenant));
    ASSIGN_OR_RETURN(bool found, oldest.Step());
    if (!found) return absl::InternalError("queued job vanished inside a write transaction");
    ASSIGN_OR_RETURN(Job job, internal::LoadJob(c, "", oldest.Text(0)));
    RETURN_IF_ERROR(internal::TransitionJob(c, job, JobState::kRunning, "").status());
    const int64_t now = NowMicros();
    RETURN_IF_ERROR(c.Exec("UPDATE jobs SET attempts = attempts + 1, lease_owner = ?2, "
                           "lease_expires_at_us = ?3, started_at_us = CASE WHEN started_at_us = 0 "
                           "THEN ?4 ELSE started_at_us END WHERE job_id = ?1",
                           job.job_id, worker_id, now + absl::ToInt64Microseconds(lease), now));
    ASSIGN_OR_RETURN(int64_t turn, c.QueryInt("SELECT MAX(last_claim) FROM queue_turns", 0));
    RETURN_IF_ERROR(c.Exec("INSERT INTO queue_turns(tenant_id, last_claim) VALUES (?1, ?2) "
                           "ON CONFLICT(tenant_id) DO UPDATE SET last_claim = excluded.last_claim",
                           tenant, turn + 1));
    ASSIGN_OR_RETURN(claimed, internal::LoadJob(c, "", job.job_id));
    return absl::OkStatus();
  }));
  if (claimed.has_value()) NotifyWaiters();
  return claimed;
}

absl::Status Registry::Heartbeat(const std::string& job_id, const std::string& worker_id,
                                 absl::Duration lease) {
  RETURN_IF_ERROR(ValidateWorker(worker_id, lease));
  return pool_->Write(false, [&](Conn& c) -> absl::Status {
    RETURN_IF_ERROR(internal::LoadLeasedJob(c, job_id, worker_id).status());
    return c.Exec("UPDATE jobs SET lease_expires_at_us = ?2 WHERE job_id = ?1", job_id,
                  NowMicros() + absl::ToInt64Microseconds(lease));
  });
}

absl::Status Registry::UpdateRunningJob(const std::string& job_id, const std::string& worker_id,
                                        const JobUpdate& update) {
  if (worker_id.empty()) return absl::InvalidArgumentError("worker_id is empty");
  return pool_->Write(false, [&](Conn& c) -> absl::Status {
    RETURN_IF_ERROR(internal::LoadLeasedJob(c, job_id, worker_id).status());
    if (update.progress.has_value()) {
      const JobProgress& p = *update.progress;
      RETURN_IF_ERROR(c.Exec("UPDATE jobs SET step = ?2, max_steps = ?3, train_loss = ?4, "
                             "val_loss = ?5, tokens_per_second = ?6 WHERE job_id = ?1",
                             job_id, p.step, p.max_steps, p.train_loss, p.val_loss,
                             p.tokens_per_second));
    }
    if (update.selected_slots.has_value()) {
      RETURN_IF_ERROR(c.Exec("UPDATE jobs SET selected_slots = ?2 WHERE job_id = ?1", job_id,
                             *update.selected_slots));
    }
    if (update.checkpoint.has_value()) {
      RETURN_IF_ERROR(
          c.Exec("UPDATE jobs SET checkpoint = ?2 WHERE job_id = ?1", job_id, *update.checkpoint));
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<Job> Registry::FinishJob(const std::string& job_id, const std::string& worker_id,
                                        const JobResult& result) {
  if (result.state != JobState::kSucceeded && result.state != JobState::kFailed) {
    return absl::InvalidArgumentError(absl::StrCat("FinishJob state must be SUCCEEDED or FAILED, got ",
                                                   Sv(JobStateName(result.state))));
  }
  if (result.state == JobState::kFailed && result.error.empty()) {
    return absl::InvalidArgumentError("FinishJob with FAILED needs an error message");
  }
  Job job;
  RETURN_IF_ERROR(pool_->Write(false, [&](Conn& c) -> absl::Status {
    ASSIGN_OR_RETURN(job, internal::FinishJobInTxn(c, job_id, worker_id, result));
    return absl::OkStatus();
  }));
  NotifyWaiters();
  return job;
}

absl::StatusOr<Job> Registry::FailQueuedJob(const std::string& job_id, const std::string& error,
                                            const std::string& actor) {
  if (error.empty()) return absl::InvalidArgumentError("FailQueuedJob needs an error message");
  Job job;
  RETURN_IF_ERROR(pool_->Write(false, [&](Conn& c) -> absl::Status {
    ASSIGN_OR_RETURN(Job current, internal::LoadJob(c, "", job_id));
    if (current.state != JobState::kQueued) {
      return absl::FailedPreconditionError(
          absl::StrCat("job '", job_id, "' is ", Sv(JobStateName(current.state)), ", not QUEUED"));
    }
    RETURN_IF_ERROR(internal::TransitionJob(c, current, JobState::kFailed, error).status());
    RETURN_IF_ERROR(internal::AppendAudit(c, actor, "job.fail", absl::StrCat("job/", job_id),
                                          internal::JsonString(error)));
    ASSIGN_OR_RETURN(job, internal::LoadJob(c, "", job_id));
    return absl::OkStatus();
  }));
  NotifyWaiters();
  return job;
}

absl::StatusOr<int64_t> Registry::RequeueExpiredLeases(int max_attempts) {
  if (max_attempts <= 0) max_attempts = options_.max_job_attempts;
  int64_t changed = 0;
  RETURN_IF_ERROR(pool_->Write(false, [&](Conn& c) -> absl::Status {
    changed = 0;
    std::vector<Job> expired;
    {
      ASSIGN_OR_RETURN(Stmt st, c.Prepare(absl::StrCat("SELECT ", internal::kJobColumns,
                                                       " FROM jobs WHERE state = 'RUNNING' AND "
                                                       "lease_expires_at_us < ?1 ORDER BY id"),
                                          NowMicros()));
      while (true) {
        ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) break;
        expired.push_back(internal::ReadJob(st));
      }
    }
    for (const Job& job : expired) {
      if (job.attempts >= max_attempts) {
        const std::string reason =
            absl::StrCat("lease of worker '", job.lease_owner, "' expired after ", job.attempts,
                         " attempt(s); giving up");
        RETURN_IF_ERROR(internal::TransitionJob(c, job, JobState::kFailed, reason).status());
        RETURN_IF_ERROR(internal::AppendAudit(c, "system", "job.fail",
                                              absl::StrCat("job/", job.job_id),
                                              internal::JsonString(reason)));
      } else {
        RETURN_IF_ERROR(internal::TransitionJob(c, job, JobState::kQueued, "").status());
        RETURN_IF_ERROR(internal::AppendAudit(
            c, "system", "job.requeue", absl::StrCat("job/", job.job_id),
            absl::StrCat("{\"expired_worker\":", internal::JsonString(job.lease_owner),
                         ",\"attempts\":", job.attempts, "}")));
      }
      ++changed;
    }
    return absl::OkStatus();
  }));
  if (changed > 0) NotifyWaiters();
  return changed;
}

// ---- Events -------------------------------------------------------------------------------------

absl::StatusOr<int64_t> Registry::AppendJobEvent(const std::string& job_id, const std::string& type,
                                                 const std::string& payload_json) {
  if (type.empty()) return absl::InvalidArgumentError("job event type is empty");
  int64_t seq = 0;
  RETURN_IF_ERROR(pool_->Write(false, [&](Conn& c) -> absl::Status {
    RETURN_IF_ERROR(internal::LoadJob(c, "", job_id).status());
    ASSIGN_OR_RETURN(seq, internal::AppendEvent(c, job_id, type,
                                                payload_json.empty() ? "{}" : payload_json));
    return absl::OkStatus();
  }));
  NotifyWaiters();
  return seq;
}

absl::StatusOr<std::vector<JobEvent>> Registry::ListJobEvents(const std::string& tenant_id,
                                                              const std::string& job_id,
                                                              int64_t after_seq, int limit) {
  std::vector<JobEvent> out;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    out.clear();
    RETURN_IF_ERROR(internal::LoadJob(c, tenant_id, job_id).status());
    ASSIGN_OR_RETURN(Stmt st, c.Prepare("SELECT seq, type, payload, created_at_us FROM job_events "
                                        "WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                                        job_id, after_seq,
                                        internal::SqlLimit(limit)));
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      out.push_back(JobEvent{job_id, st.Int(0), st.Text(1), st.Text(2), st.Int(3)});
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<bool> Registry::WaitForJobEvents(const std::string& job_id, int64_t after_seq,
                                                absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    uint64_t epoch;
    {
      std::lock_guard<std::mutex> lock(wait_mu_);
      epoch = wait_epoch_;
    }
    int64_t last = 0;
    RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
      RETURN_IF_ERROR(internal::LoadJob(c, "", job_id).status());
      ASSIGN_OR_RETURN(last, c.QueryInt("SELECT MAX(seq) FROM job_events WHERE job_id = ?1", 0,
                                        job_id));
      return absl::OkStatus();
    }));
    if (last > after_seq) return true;
    const absl::Time now = absl::Now();
    if (now >= deadline) return false;
    const absl::Time wake = std::min(deadline, now + options_.wait_poll_interval);
    std::unique_lock<std::mutex> lock(wait_mu_);
    wait_cv_.wait_for(lock, absl::ToChronoNanoseconds(wake - now),
                      [&] { return wait_epoch_ != epoch; });
  }
}

}  // namespace tessera::storage
