// The registry: Tessera's system of record. Metadata in SQLite (data_dir/registry.db, the default) or
// PostgreSQL (Options::database; storage/database.h is the seam, both run the same SQL and the same
// numbered migrations) plus content-addressed blobs: a BlobStore in data_dir/blobs owned by this process
// (the default), or a BlobBackend owned by another (Options::blob_backend; issue 21, roles).
//
// Contract for every method:
// - Returns absl::Status / StatusOr with canonical codes: INVALID_ARGUMENT (bad input, message names the
//   field), NOT_FOUND (absent object), ALREADY_EXISTS, FAILED_PRECONDITION (illegal state / transition),
//   DATA_LOSS (blob corrupt), INTERNAL (database failure). SQLITE_BUSY never reaches a caller: writes use
//   BEGIN IMMEDIATE with a busy timeout plus retries with backoff until Options::busy_deadline, after which
//   UNAVAILABLE is returned. On PostgreSQL writes are SERIALIZABLE transactions and a serialization
//   failure or deadlock is retried the same way; a lost server connection is UNAVAILABLE.
// - Tenant scoping: methods taking `tenant_id` only ever see that tenant's objects; another tenant's
//   object is NOT_FOUND and error text never reveals that it exists. Where documented, an EMPTY tenant_id
//   means "any tenant" (admin scope) -- callers must only pass "" for ADMIN principals.
// - Every mutating method takes `actor` (API key id, or "system") and appends an audit entry in the same
//   transaction. Exception: the high-frequency worker calls (ClaimNextJob, Heartbeat, UpdateRunningJob,
//   AppendJobEvent) are recorded in the job's event log instead; FinishJob is audited with the worker
//   id as actor, lease expiry with actor "system".
// - Thread-safe; several processes may open the same data_dir at once (SQLite WAL + file locks), or the
//   same PostgreSQL database from several hosts: job claims, version numbers, live-pointer moves and the
//   change feed keep their guarantees (serializable writes; see storage/postgres_database.h). A
//   Registry must not be used across fork(): a child process opens its own.
//
// Durability: commits that publish a version or move a live pointer run with synchronous=FULL; other
// commits use synchronous=NORMAL (WAL: atomic and consistent after a crash, possibly losing the last
// moments on power loss); PostgreSQL commits are always durable (synchronous_commit). A blob is always written (and fsync'ed) before the row naming it is committed,
// and PublishVersion/CreateDataset refuse a digest whose blob is absent, so no row ever lacks its blob.
//
// Blob garbage collection runs ONLY on the process that owns the blobs (role all or control; see
// Options::blob_backend): elsewhere it is FAILED_PRECONDITION. It (CollectGarbage) deletes blobs referenced by no dataset/version row and no
// unfinished (QUEUED/RUNNING) job's checkpoint, and whose last Put is older than a grace period. Safe against a concurrent publish because (1) BlobStore::Put
// refreshes the blob's mtime, so a blob being published is young, and (2) each deletion happens inside a
// write transaction that re-checks the references, so it serializes with PublishVersion/CreateDataset
// (which check the blob exists inside their own write transaction).
//
// Live pointers: each tenant has a live version (0 = base) and a history. Promote(v) moves forward;
// Rollback() without a target returns to the version that was live before the current one, repeatedly
// (an undo stack: promote 1, promote 2, promote 3, rollback -> 2, rollback -> 1, rollback -> 0, rollback
// -> FAILED_PRECONDITION); Rollback(to=N) jumps to N (and a later plain Rollback undoes that jump).
// Promoting or rolling back to the version that is already live is a successful no-op (changed=false,
// nothing written, no sequence bump). Every move bumps the global change sequence in the same
// transaction; PublishVersion also appends a change (kind publish) so followers can preload.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "storage/blob_store.h"
#include "storage/quotas.h"
#include "storage/types.h"

namespace tessera::storage {

class Database;  // storage/database.h (internal)

class Registry {
 public:
  struct Options {
    // How long one statement waits on a lock (SQLite busy timeout, PostgreSQL lock_timeout) before our
    // own retry loop takes over.
    absl::Duration busy_timeout = absl::Milliseconds(200);
    // Total time a write keeps retrying on SQLITE_BUSY (PostgreSQL: serialization failure, deadlock, lock
    // timeout) before giving up with UNAVAILABLE.
    absl::Duration busy_deadline = absl::Seconds(60);
    // A job whose lease expires is requeued until it has been claimed this many times, then FAILED.
    int max_job_attempts = 3;
    // Run RequeueExpiredLeases at Open.
    bool requeue_expired_on_open = true;
    // Migrate the schema up to this number (-1 = latest). Lower values exist for migration tests.
    int migrate_to = -1;
    // Cross-process fallback for WaitForJobEvents / WaitForChange: how often to re-poll the database.
    absl::Duration wait_poll_interval = absl::Milliseconds(100);
    // Where the metadata lives: "" or "sqlite" = data_dir/registry.db (embedded, the default);
    // "postgres://USER@HOST:PORT/DB" (any libpq URI) = that PostgreSQL database, shared by every process
    // and host that opens it. The blobs are wherever blob_backend says, either way.
    std::string database;
    // Server-wide quota defaults for tenants without an override (storage/quotas.h; 0 = unlimited).
    QuotaLimits default_quotas;
    // Where the blobs live. Null (the default): this process OWNS them, in data_dir/blobs
    // (tessera-server --role all or control): it alone garbage-collects, backs up and serves them to the
    // other processes (services/blob_service.h). Set: another process owns them and this backend reaches
    // them (services::RemoteBlobStore on inference replicas and trainers, --role inference|trainer):
    // data_dir/blobs is not opened, owned_blobs() is null, and CollectGarbage /
    // DeleteBlobsIfUnreferenced are FAILED_PRECONDITION. Publish and CreateDataset still check, inside
    // their write transactions, that the owner holds the blob (BlobBackend::Size): the shared database's
    // write lock is what serializes them with the owner's garbage collector.
    std::shared_ptr<BlobBackend> blob_backend;
  };

  // Opens (creating if needed) the database (Options::database) and data_dir/blobs, applies pending
  // migrations and, unless disabled, requeues expired job leases. INVALID_ARGUMENT for an unknown
  // Options::database; UNAVAILABLE when a PostgreSQL server cannot be reached.
  static absl::StatusOr<std::unique_ptr<Registry>> Open(const std::string& data_dir,
                                                        const Options& options);
  static absl::StatusOr<std::unique_ptr<Registry>> Open(const std::string& data_dir) {
    return Open(data_dir, Options());
  }
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Every blob read and write goes through blobs(): the owned store or Options::blob_backend.
  BlobBackend& blobs() { return *blobs_; }
  // The store in data_dir/blobs when this process owns the blobs; null when Options::blob_backend is set.
  // For what only the owner does: garbage collection, backup, serving blobs to other processes.
  BlobStore* owned_blobs() { return owned_blobs_.get(); }
  // true when the metadata is in PostgreSQL (Options::database).
  bool on_postgres() const;
  const std::string& data_dir() const { return data_dir_; }

  // ---- Schema ---------------------------------------------------------------------------------
  static int LatestSchemaVersion();
  absl::StatusOr<int> SchemaVersion();
  // SQLite: PRAGMA integrity_check; OK iff SQLite answers "ok", else DATA_LOSS with its report.
  // PostgreSQL (which checks its own pages): every registry table and index can be read in full.
  absl::Status CheckIntegrity();

  // ---- Tenants --------------------------------------------------------------------------------
  // INVALID_ARGUMENT for a bad slug, ALREADY_EXISTS if taken. The new tenant's live version is 0.
  absl::StatusOr<Tenant> CreateTenant(const std::string& tenant_id, const std::string& display_name,
                                      const std::string& actor);
  absl::StatusOr<Tenant> GetTenant(const std::string& tenant_id);
  absl::StatusOr<std::vector<Tenant>> ListTenants();  // ordered by tenant_id
  // Deletes the tenant and every row of it in one transaction (synchronous=FULL): API keys, datasets,
  // jobs and their events, versions, live-pointer history and change-feed rows, and any other table
  // with a tenant_id column (quotas and the like); the audit log is kept. Versions are otherwise
  // immutable (see migration 5 for how this one path may delete them). FAILED_PRECONDITION while a job
  // of the tenant is QUEUED or RUNNING (cancel them first); NOT_FOUND for an unknown tenant. Audited
  // ("tenant.delete"). Blobs are left alone: call DeleteBlobsIfUnreferenced once nothing serves them.
  absl::StatusOr<TenantDeletion> DeleteTenant(const std::string& tenant_id, const std::string& actor);

  // ---- API keys -------------------------------------------------------------------------------
  // role ADMIN requires tenant_id == ""; role TENANT requires an existing tenant. The secret is random
  // (/dev/urandom), returned only here; only its sha256 is stored. `options`: scopes (TENANT keys; a
  // zero set is INVALID_ARGUMENT) and expiry (INVALID_ARGUMENT unless in the future).
  absl::StatusOr<IssuedApiKey> CreateApiKey(Role role, const std::string& tenant_id,
                                            const std::string& actor,
                                            const ApiKeyOptions& options = ApiKeyOptions());
  // UNAUTHENTICATED for a malformed, unknown, revoked or expired secret (message never says which).
  absl::StatusOr<Principal> AuthenticateKey(const std::string& secret);
  // Records that the key was used now, at most once a minute per key (a write per request would
  // serialize the hot path on SQLite's write lock). Not audited: high-frequency, like the worker calls.
  absl::Status TouchApiKey(const std::string& key_id);
  // NOT_FOUND if unknown; FAILED_PRECONDITION if already revoked.
  absl::Status RevokeApiKey(const std::string& key_id, const std::string& actor);
  // Sets (or with 0 clears) the key's expiry: rotation lets the replaced key live on for a grace
  // period. NOT_FOUND if unknown; FAILED_PRECONDITION if revoked. Audited ("apikey.expire").
  absl::Status SetApiKeyExpiry(const std::string& key_id, int64_t expires_at_us, const std::string& actor);
  absl::StatusOr<ApiKey> GetApiKey(const std::string& key_id);
  // tenant_id "" = all keys (admin and tenant); else that tenant's keys. Ordered by creation.
  absl::StatusOr<std::vector<ApiKey>> ListApiKeys(const std::string& tenant_id);
  // Number of non-revoked ADMIN keys (for bootstrapping a server on an empty data dir).
  absl::StatusOr<int64_t> CountActiveAdminKeys();

  // ---- Datasets -------------------------------------------------------------------------------
  // The blob must already be stored (FAILED_PRECONDITION otherwise); the tenant must exist (NOT_FOUND).
  // RESOURCE_EXHAUSTED when it would take the tenant over its storage_bytes quota.
  absl::StatusOr<Dataset> CreateDataset(const NewDataset& dataset, const std::string& actor);
  absl::StatusOr<Dataset> GetDataset(const std::string& tenant_id, const std::string& dataset_id);
  absl::StatusOr<std::vector<Dataset>> ListDatasets(const std::string& tenant_id);  // newest first
  // FAILED_PRECONDITION while a QUEUED or RUNNING job references it. The blob is left to the GC.
  absl::Status DeleteDataset(const std::string& tenant_id, const std::string& dataset_id,
                             const std::string& actor);

  // ---- Jobs -----------------------------------------------------------------------------------
  // Creates a QUEUED job (and its first event, type "state"). Datasets must be the tenant's
  // (NOT_FOUND otherwise). If `idempotency_key` is set and the tenant already has a job with that key,
  // returns that existing job unchanged (whatever its state), without creating anything.
  // RESOURCE_EXHAUSTED at the tenant's max_queued_jobs, max_versions or storage_bytes (storage/quotas.h).
  absl::StatusOr<Job> CreateJob(const NewJob& job, const std::string& actor);
  // The tenant's job created with `idempotency_key`, if any.
  absl::StatusOr<std::optional<Job>> FindJobByIdempotencyKey(const std::string& tenant_id,
                                                             const std::string& idempotency_key);
  // tenant_id "" = any tenant (admin).
  absl::StatusOr<Job> GetJob(const std::string& tenant_id, const std::string& job_id);
  // Newest first. tenant_id "" = all tenants. page_size <= 0 -> 50, capped at 1000. page_token is
  // opaque (from a previous JobPage); a malformed one is INVALID_ARGUMENT.
  absl::StatusOr<JobPage> ListJobs(const std::string& tenant_id, int page_size,
                                   const std::string& page_token);
  // QUEUED or RUNNING -> CANCELLED (lease cleared; the worker learns it from Heartbeat/UpdateRunningJob/
  // FinishJob, which then fail with FAILED_PRECONDITION). Finished -> FAILED_PRECONDITION.
  // tenant_id "" = any tenant (admin).
  absl::StatusOr<Job> CancelJob(const std::string& tenant_id, const std::string& job_id,
                                const std::string& actor);
  // Number of jobs in `state`; tenant_id "" = all tenants.
  absl::StatusOr<int64_t> CountJobs(const std::string& tenant_id, JobState state);

  // ---- Job queue (workers) --------------------------------------------------------------------
  // Claims the next QUEUED job fairly across tenants and returns it RUNNING, leased to `worker_id` for
  // `lease` (attempts incremented; started_at set on the first claim). Fairness: among tenants with
  // queued jobs, pick the one with the fewest RUNNING jobs, ties broken by the least recently served
  // tenant (round robin), then that tenant's oldest QUEUED job. nullopt when nothing is queued.
  // A tenant running its max_running_jobs quota (storage/quotas.h) is skipped until one finishes.
  // A job whose `attempts` > 1 is a retry: its `checkpoint` (if any) tells where to resume.
  absl::StatusOr<std::optional<Job>> ClaimNextJob(const std::string& worker_id, absl::Duration lease);
  // Renews the lease to now + `lease`. FAILED_PRECONDITION if the job is not RUNNING or leased to
  // another worker (e.g. cancelled, or requeued after expiry): the worker must stop working on it.
  absl::Status Heartbeat(const std::string& job_id, const std::string& worker_id, absl::Duration lease);
  // Progress / slots / checkpoint of a RUNNING job, by its lease owner (same errors as Heartbeat).
  // Does not append events: the worker appends its own "progress" events with AppendJobEvent.
  absl::Status UpdateRunningJob(const std::string& job_id, const std::string& worker_id,
                                const JobUpdate& update);
  // RUNNING -> SUCCEEDED | FAILED by the lease owner; appends a "state" event.
  absl::StatusOr<Job> FinishJob(const std::string& job_id, const std::string& worker_id,
                                const JobResult& result);
  // Marks a QUEUED job FAILED without running it (e.g. its spec proved invalid). Appends a "state" event.
  absl::StatusOr<Job> FailQueuedJob(const std::string& job_id, const std::string& error,
                                    const std::string& actor);
  // Jobs RUNNING with an expired lease go back to QUEUED, or to FAILED ("lease expired after N attempts")
  // once attempts >= max_attempts (max_attempts <= 0 -> Options::max_job_attempts). Each appends a
  // "state" event. Returns how many jobs were changed. Run at Open; call it periodically.
  absl::StatusOr<int64_t> RequeueExpiredLeases(int max_attempts = 0);

  // ---- Job events -----------------------------------------------------------------------------
  // Appends an event (seq = previous + 1) and wakes in-process waiters. NOT_FOUND for an unknown job.
  // Allowed in any state (a worker's last events may race a cancel).
  absl::StatusOr<int64_t> AppendJobEvent(const std::string& job_id, const std::string& type,
                                         const std::string& payload_json);
  // Events with seq > after_seq, ascending, at most `limit` (<= 0 -> all). tenant_id "" = any tenant.
  absl::StatusOr<std::vector<JobEvent>> ListJobEvents(const std::string& tenant_id,
                                                      const std::string& job_id, int64_t after_seq,
                                                      int limit = 0);
  // Blocks until job `job_id` has an event with seq > after_seq (true) or `timeout` passes (false).
  // Woken immediately by appends from this process; polls every Options::wait_poll_interval for other
  // processes. NOT_FOUND for an unknown job.
  absl::StatusOr<bool> WaitForJobEvents(const std::string& job_id, int64_t after_seq,
                                        absl::Duration timeout);

  // ---- Expert versions ------------------------------------------------------------------------
  // Assigns the tenant's next version number (max + 1) inside the write transaction. FAILED_PRECONDITION
  // if the blob is absent; NOT_FOUND for an unknown tenant, parent version or job (of that tenant).
  // size_bytes is taken from the blob. Appends a publish change (synchronous=FULL commit).
  // RESOURCE_EXHAUSTED at the tenant's max_versions or past its storage_bytes (storage/quotas.h).
  absl::StatusOr<ExpertVersion> PublishVersion(const NewVersion& version, const std::string& actor);
  // The end of a successful job, in one transaction (synchronous=FULL; storage/registry_publish.cc):
  // PublishVersion(version) + (when `promote`) Promote to it + the job's "version" event
  // {"version","promoted","reason"} + FinishJob(version.job_id, SUCCEEDED, result_version). A crash leaves
  // all of it or none (the job then stays RUNNING until its lease expires and is retried). A job that
  // already has a version reuses it (reused=true) instead of publishing a second. FAILED_PRECONDITION,
  // with nothing written, unless `worker_id` holds the RUNNING job's lease; other errors as PublishVersion.
  absl::StatusOr<PublishedJob> PublishJobVersion(const std::string& worker_id, const NewVersion& version,
                                                 bool promote, const std::string& reason,
                                                 const std::string& actor);
  // version >= 1 (INVALID_ARGUMENT otherwise: 0 is the base, not a stored version); NOT_FOUND if the
  // tenant (or this tenant's version) does not exist.
  absl::StatusOr<ExpertVersion> GetVersion(const std::string& tenant_id, int64_t version);
  // Newest first.
  absl::StatusOr<std::vector<ExpertVersion>> ListVersions(const std::string& tenant_id);

  // ---- Live pointers --------------------------------------------------------------------------
  // Makes `version` (an existing version of the tenant, or 0 = base) live. NOT_FOUND for an unknown
  // tenant/version. Already live -> OK, changed=false.
  absl::StatusOr<LiveMove> Promote(const std::string& tenant_id, int64_t version,
                                   const std::string& actor);
  // Without to_version: back to the version live before the current one (FAILED_PRECONDITION if there
  // is none). With to_version: jump to it (0 or an existing version, else NOT_FOUND).
  absl::StatusOr<LiveMove> Rollback(const std::string& tenant_id, std::optional<int64_t> to_version,
                                    const std::string& actor);
  // The tenant's live version (0 = base). NOT_FOUND for an unknown tenant. One indexed read.
  absl::StatusOr<int64_t> GetLive(const std::string& tenant_id);
  // Live-pointer moves of the tenant, newest first (at most `limit`, <= 0 -> all).
  absl::StatusOr<std::vector<Change>> ListLiveHistory(const std::string& tenant_id, int limit = 0);

  // ---- Change feed (followers) ----------------------------------------------------------------
  // The latest change sequence number (0 when nothing ever changed).
  absl::StatusOr<int64_t> ChangeSequence();
  // Changes with seq > after_seq, ascending, at most `limit` (<= 0 -> all).
  absl::StatusOr<std::vector<Change>> ListChangesSince(int64_t after_seq, int limit = 0);
  // Blocks until ChangeSequence() > after_seq (true) or timeout (false); in-process wake-ups plus polling.
  absl::StatusOr<bool> WaitForChange(int64_t after_seq, absl::Duration timeout);

  // ---- Replicas (processes following this registry; migration 11) ------------------------------
  // Inserts or rewrites the process's row with heartbeat_at_us = now (started_at_us kept from the first
  // write of this replica_id by the same process: the caller passes it). INVALID_ARGUMENT for an empty
  // replica_id or role. Not audited: a high-frequency worker call, like job heartbeats.
  absl::Status HeartbeatReplica(const Replica& replica);
  // Every registered replica, by replica_id (stale ones included: callers judge heartbeat_at_us).
  absl::StatusOr<std::vector<Replica>> ListReplicas();
  // Removes the row (a clean stop); OK when absent.
  absl::Status RemoveReplica(const std::string& replica_id);

  // ---- Audit ----------------------------------------------------------------------------------
  // For mutations the registry cannot see (e.g. a services-level action). Registry methods audit
  // themselves; do not double-log them.
  // `tenant_id` "" = derived from the target (see registry_internal.h); `result` "OK" or a refused
  // mutation's canonical code.
  absl::Status AppendAudit(const std::string& actor, const std::string& action,
                           const std::string& target, const std::string& detail,
                           const std::string& tenant_id = "", const std::string& result = "OK");
  // Entries with id > after_id, ascending, at most `limit` (<= 0 -> all).
  absl::StatusOr<std::vector<AuditEntry>> ListAudit(int64_t after_id, int limit = 0);
  // Filtered, newest first, paginated (INVALID_ARGUMENT for a malformed page_token or since > until).
  absl::StatusOr<AuditPage> QueryAudit(const AuditQuery& query);

  // ---- Quotas (storage/quotas.h) ----------------------------------------------------------------
  // Overrides, defaults, effective limits and usage. NOT_FOUND for an unknown tenant.
  absl::StatusOr<TenantQuotas> GetQuotas(const std::string& tenant_id);
  // Only the effective limits (no usage query): what the request path's rate limiter reads.
  // NOT_FOUND for an unknown tenant.
  absl::StatusOr<QuotaLimits> GetQuotaLimits(const std::string& tenant_id);
  // Applies `update` (unset: unchanged; >= 0: stored, 0 = unlimited; -1: back to the default) and
  // returns the result. INVALID_ARGUMENT (naming the quota) below -1. Audited ("tenant.quotas.set").
  absl::StatusOr<TenantQuotas> SetQuotas(const std::string& tenant_id, const QuotaOverrides& update,
                                         const std::string& actor);
  // RESOURCE_EXHAUSTED (saying which limit) when job `job_id` of the tenant, about to train, could not
  // publish its version: max_versions reached (counting the tenant's other running jobs) or storage_bytes
  // used up. The scheduler fails such a job before training.
  absl::Status CheckPublishQuota(const std::string& tenant_id, const std::string& job_id);

  // ---- Blob garbage collection ----------------------------------------------------------------
  // Deletes blobs referenced by no dataset or version row nor by the checkpoint of a QUEUED/RUNNING job,
  // whose last Put is older than `grace`, and
  // temp files older than `grace`. See the top comment for why this is safe against a concurrent publish.
  absl::StatusOr<GcStats> CollectGarbage(absl::Duration grace = absl::Minutes(10));
  // Of `digests`, those a row references as CollectGarbage decides it (a dataset or version, or an
  // unfinished job's checkpoint). Read-only, on any process: a follower prunes its blob cache with it.
  absl::StatusOr<std::set<std::string>> ReferencedBlobs(const std::vector<std::string>& digests);
  // Deletes each of `digests` that no row references (as CollectGarbage decides it) and whose last Put
  // is not after `written_before`: content-addressed blobs are shared, so another tenant's dataset or
  // version with the same bytes keeps it, and so does a Put made for a publish since then.
  absl::StatusOr<GcStats> DeleteBlobsIfUnreferenced(const std::vector<std::string>& digests,
                                                    absl::Time written_before);

 private:
  Registry(std::string data_dir, Options options, std::unique_ptr<BlobStore> owned_blobs,
           std::unique_ptr<Database> pool);
  // FAILED_PRECONDITION unless this process owns the blobs (the GC's guard).
  absl::Status RequireOwnedBlobs(std::string_view what) const;
  void NotifyWaiters();
  // One guarded deletion (write transaction: references re-checked, then the mtime against `cutoff`).
  absl::Status DeleteBlobIfUnreferenced(const std::string& digest, absl::Time cutoff, GcStats* stats);

  std::string data_dir_;
  Options options_;
  std::unique_ptr<BlobStore> owned_blobs_;  // null when options_.blob_backend is set
  BlobBackend* blobs_;                      // owned_blobs_ or options_.blob_backend
  std::unique_ptr<Database> pool_;
  QuotaPolicy quotas_;  // options_.default_quotas; overrides off below migration 12 (see Open)

  // In-process wake-up for WaitForJobEvents / WaitForChange: bumped on every append/change.
  std::mutex wait_mu_;
  std::condition_variable wait_cv_;
  uint64_t wait_epoch_ = 0;
};

}  // namespace tessera::storage
