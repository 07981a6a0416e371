// Helpers shared by the registry_*.cc files (not part of the public API).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/blob_store.h"
#include "storage/database.h"
#include "storage/quotas.h"
#include "storage/types.h"

namespace tessera::storage::internal {

// A LIMIT operand for `limit` (<= 0 = no limit): both engines take INT64_MAX (SQLite's -1 is not SQL).
inline int64_t SqlLimit(int limit) { return limit > 0 ? limit : INT64_MAX; }

// Serializes a transaction that checks a blob exists (then names it in a row) with the garbage
// collector's reference check + delete. Must be the transaction's FIRST statement. SQLite: nothing to do
// (BEGIN IMMEDIATE already serializes all writers). PostgreSQL: LOCK TABLE blob_refs_lock, a utility
// statement, so the serializable snapshot is taken after the lock is held and sees the other side's
// commit (a SELECT-based advisory lock would take the snapshot before waiting).
absl::Status LockBlobReferences(Conn& c);

// `s` as a JSON string literal, quotes included.
std::string JsonString(std::string_view s);

// "<prefix><16 random base62>", e.g. "ds_..." / "job_...".
absl::StatusOr<std::string> NewId(std::string_view prefix);

// Appends an audit entry. `tenant_id` "" = derived from the target: "tenant/<t>..." names it, and
// "job/", "dataset/" and "apikey/" targets are looked up (so call it while the row still exists).
absl::Status AppendAudit(Conn& c, const std::string& actor, std::string_view action,
                         const std::string& target, const std::string& detail,
                         const std::string& tenant_id = "", const std::string& result = "OK");

// OK if the tenant exists, else NOT_FOUND naming it.
absl::Status RequireTenant(Conn& c, const std::string& tenant_id);

// Canonical NOT_FOUND messages (never say whether the object exists for another tenant).
absl::Status JobNotFound(const std::string& job_id);
absl::Status DatasetNotFound(const std::string& dataset_id);
absl::Status VersionNotFound(const std::string& tenant_id, int64_t version);

// Column lists and row decoders; a SELECT must list exactly these columns first.
extern const char kJobColumns[];
// How many columns kJobColumns selects (ReadJob reads 0..kJobColumnCount-1): a column a query appends
// after them is at this index.
inline constexpr int kJobColumnCount = 25;
Job ReadJob(const Stmt& st);
extern const char kDatasetColumns[];
Dataset ReadDataset(const Stmt& st);
extern const char kVersionColumns[];  // live is not included: filled by the caller
inline constexpr int kNumVersionColumns = 17;  // a query's next column is kVersionColumns' end
ExpertVersion ReadVersion(const Stmt& st);
extern const char kChangeColumns[];
Change ReadChange(const Stmt& st);

// Loads one job by id, scoped to tenant_id unless it is empty.
absl::StatusOr<Job> LoadJob(Conn& c, const std::string& tenant_id, const std::string& job_id);

// Validates and applies a state change of a job (THE place where jobs change state): checks
// CheckJobTransition, writes state/finished_at/lease fields, and appends a "state" event.
// `error` is stored when non-empty. Returns the new event's seq.
absl::StatusOr<int64_t> TransitionJob(Conn& c, const Job& job, JobState to, const std::string& error);

// Appends a job event with seq = last + 1; returns the seq.
absl::StatusOr<int64_t> AppendEvent(Conn& c, const std::string& job_id, std::string_view type,
                                    const std::string& payload);

// Transaction bodies shared by the public methods and Registry::PublishJobVersion (which runs several
// in one transaction). Each must be called inside a write transaction.
// PublishVersion's: validates, inserts the version row, its publish change and audit. Checks the blob
// exists, so the transaction must have begun with LockBlobReferences.
// Refused (RESOURCE_EXHAUSTED) past the tenant's max_versions / storage_bytes (`quotas`: the
// registry's defaults and overrides).
absl::StatusOr<ExpertVersion> InsertVersion(Conn& c, BlobBackend& blobs, const NewVersion& version,
                                            const std::string& actor, const QuotaPolicy& quotas);
// Promote's: moves the live pointer (change row, audit) unless `version` is already live.
absl::StatusOr<LiveMove> PromoteInTxn(Conn& c, const std::string& tenant_id, int64_t version,
                                      const std::string& actor);
// The job, if RUNNING and leased to `worker_id`; else FAILED_PRECONDITION saying why.
absl::StatusOr<Job> LoadLeasedJob(Conn& c, const std::string& job_id, const std::string& worker_id);
// FinishJob's (after its argument checks): result_version checked, state event, audit.
absl::StatusOr<Job> FinishJobInTxn(Conn& c, const std::string& job_id, const std::string& worker_id,
                                   const JobResult& result);
// Quotas (registry_quotas.cc, storage/quotas.h): the tenant's stored overrides and usage, and the
// RESOURCE_EXHAUSTED checks run inside the write transaction of what they guard. `quotas`: the
// registry's defaults and whether overrides are stored (none are read when not).
absl::StatusOr<QuotaOverrides> LoadQuotaOverrides(Conn& c, const std::string& tenant_id, const QuotaPolicy& quotas);
absl::StatusOr<QuotaUsage> LoadQuotaUsage(Conn& c, const std::string& tenant_id);
// storage_bytes for a new dataset of `bytes`.
absl::Status CheckDatasetQuota(Conn& c, const std::string& tenant_id, const QuotaPolicy& quotas, int64_t bytes);
// max_queued_jobs, max_versions (versions + unfinished jobs) and storage_bytes (no room left) for a new job.
absl::Status CheckJobQuota(Conn& c, const std::string& tenant_id, const QuotaPolicy& quotas);
// max_versions and storage_bytes for publishing a version of `bytes`; bytes < 0: before job `job_id`
// trains (its size unknown; the tenant's other running jobs count as publishing first).
absl::Status CheckVersionQuota(Conn& c, const std::string& tenant_id, const QuotaPolicy& quotas, int64_t bytes,
                               const std::string& job_id = "");

}  // namespace tessera::storage::internal
