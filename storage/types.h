// Plain value types stored by the registry (storage/registry.h) and the job state machine.
//
// Conventions shared by every type here:
// - Timestamps are int64 unix time in MICROSECONDS (UTC), fields named `*_us`; 0 means "not set".
// - Tenant ids are slugs `[a-z][a-z0-9-]{1,62}`; dataset ids "ds_<base62>", job ids "job_<base62>",
//   API key ids are 12 base62 characters. All ids are opaque strings to callers.
// - Expert versions are per-tenant integers 1, 2, 3... (dense); version 0 means "the frozen base experts".
// - JSON-valued fields (`spec`, `slots_json`, event payloads, ...) are opaque text to the registry: it
//   stores and returns them verbatim and never parses them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera::storage {

// Current wall-clock time in unix microseconds.
int64_t NowMicros();

// Returns OK if `tenant_id` matches `[a-z][a-z0-9-]{1,62}`, else INVALID_ARGUMENT naming the value.
absl::Status ValidateTenantId(std::string_view tenant_id);

// ---- Tenants and keys -------------------------------------------------------------------------

struct Tenant {
  std::string tenant_id;
  std::string display_name;
  int64_t created_at_us = 0;
};

enum class Role { kTenant, kAdmin };
std::string_view RoleName(Role role);  // "TENANT" | "ADMIN"

// What a TENANT key may do (a bit set). ADMIN keys always hold every scope. Keys made before scopes
// existed hold all of them, so they behave as before.
//   inference: Inference.Generate / GenerateStream / Score
//   fine-tune: the mutations of datasets and jobs (upload, delete, create, cancel)
//   read:      reading datasets, jobs (incl. WatchJob) and versions (incl. ExportVersion)
enum Scope : uint32_t { kScopeInference = 1, kScopeFineTune = 2, kScopeRead = 4 };
inline constexpr uint32_t kAllScopes = kScopeInference | kScopeFineTune | kScopeRead;
std::string_view ScopeName(Scope scope);  // "inference" | "fine-tune" | "read"
// "inference,fine-tune,read" order, comma-separated; "" for none.
std::string ScopesToString(uint32_t scopes);
// Comma-separated names (spaces ignored) -> bits. INVALID_ARGUMENT naming an unknown scope, or for an
// empty set (a key that can do nothing is a mistake).
absl::StatusOr<uint32_t> ParseScopes(std::string_view names);

// Stored metadata of an API key. The secret itself is never stored (only its sha256).
struct ApiKey {
  std::string key_id;
  std::string tenant_id;  // empty for ADMIN keys
  Role role = Role::kTenant;
  int64_t created_at_us = 0;
  int64_t revoked_at_us = 0;  // 0 = active
  uint32_t scopes = kAllScopes;
  int64_t expires_at_us = 0;    // 0 = never
  int64_t last_used_at_us = 0;  // 0 = never; updated at most once a minute (Registry::TouchApiKey)
};

// Options of Registry::CreateApiKey.
struct ApiKeyOptions {
  uint32_t scopes = kAllScopes;  // ignored for ADMIN keys (always all)
  int64_t expires_at_us = 0;     // 0 = never expires
};

// Returned once by Registry::CreateApiKey: the only time the secret is available.
struct IssuedApiKey {
  ApiKey key;
  std::string secret;  // "tsk_<key_id>_<43 base62 chars>", pass as `authorization: Bearer <secret>`
};

// Who a presented secret authenticates as.
struct Principal {
  std::string key_id;
  std::string tenant_id;  // empty for ADMIN
  Role role = Role::kTenant;
  uint32_t scopes = kAllScopes;
  int64_t expires_at_us = 0;  // 0 = never
};

// ---- Datasets ---------------------------------------------------------------------------------

// Input of Registry::CreateDataset. The blob must already be in the BlobStore (blob first, row second).
struct NewDataset {
  std::string tenant_id;
  std::string name;
  std::string format;       // e.g. "jsonl"; opaque to the registry
  std::string blob_digest;  // sha256 hex of the dataset bytes, as returned by BlobStore::Put
  int64_t num_examples = 0;
  int64_t num_tokens = 0;
  int64_t num_loss_tokens = 0;  // tokens the loss is on (completions + EOS); 0: unknown
};

struct Dataset {
  std::string dataset_id;
  std::string tenant_id;
  std::string name;
  std::string format;
  std::string sha256;  // == blob digest of the stored bytes
  int64_t size_bytes = 0;
  int64_t num_examples = 0;
  int64_t num_tokens = 0;
  int64_t created_at_us = 0;
  int64_t num_loss_tokens = 0;  // 0 for datasets stored before migration 4 (unknown)
};

// ---- Jobs -------------------------------------------------------------------------------------

enum class JobState { kQueued, kRunning, kSucceeded, kFailed, kCancelled };

std::string_view JobStateName(JobState state);  // "QUEUED", "RUNNING", ...
absl::StatusOr<JobState> ParseJobState(std::string_view name);
bool IsTerminal(JobState state);  // SUCCEEDED, FAILED, CANCELLED

// THE job state machine; every state change in the registry goes through this check.
//   QUEUED  -> RUNNING (claim) | CANCELLED | FAILED (rejected before it ran)
//   RUNNING -> SUCCEEDED | FAILED | CANCELLED | QUEUED (lease expired, retried)
//   SUCCEEDED, FAILED, CANCELLED -> nothing (terminal)
// Returns FAILED_PRECONDITION naming both states for anything else (including X -> X).
absl::Status CheckJobTransition(JobState from, JobState to);

struct JobProgress {
  int64_t step = 0;
  int64_t max_steps = 0;
  double train_loss = 0;
  double val_loss = 0;
  double tokens_per_second = 0;
};

// Input of Registry::CreateJob.
struct NewJob {
  std::string tenant_id;
  std::string spec;  // opaque (JSON) job specification defined by the services layer
  std::string training_dataset_id;
  std::string validation_dataset_id;  // optional, empty = none
  std::string idempotency_key;        // optional; unique per tenant
  int64_t max_steps = 0;              // initial progress.max_steps
  std::string request;                // opaque (canonical JSON) request, compared on idempotent replays
  std::string suffix;                 // the caller's label (validated by the services layer)
};

struct Job {
  std::string job_id;
  std::string tenant_id;
  std::string spec;
  std::string training_dataset_id;
  std::string validation_dataset_id;
  std::string idempotency_key;
  JobState state = JobState::kQueued;
  int64_t attempts = 0;          // number of times the job was claimed
  std::string lease_owner;       // worker id while RUNNING, else empty
  int64_t lease_expires_at_us = 0;
  int64_t created_at_us = 0;
  int64_t started_at_us = 0;     // first claim
  int64_t finished_at_us = 0;    // entered a terminal state
  std::string error;             // human-readable, set on FAILED (and on CANCELLED: who cancelled)
  std::optional<int64_t> result_version;
  bool promoted = false;
  JobProgress progress;
  std::string selected_slots;    // opaque (JSON) text, set by the worker
  std::string checkpoint;        // opaque resume token (e.g. a blob digest), set by the worker
  std::string request;           // NewJob::request as created ("" for jobs older than migration 7)
  std::string suffix;            // NewJob::suffix ("" for jobs older than migration 10)
};

// Partial update of a RUNNING job by its lease owner (Registry::UpdateRunningJob). Unset = unchanged.
struct JobUpdate {
  std::optional<JobProgress> progress;
  std::optional<std::string> selected_slots;
  std::optional<std::string> checkpoint;
};

// Terminal outcome reported by the lease owner (Registry::FinishJob).
struct JobResult {
  JobState state = JobState::kSucceeded;  // SUCCEEDED or FAILED
  std::string error;                      // required non-empty for FAILED
  std::optional<int64_t> result_version;  // must be a version of the job's tenant if set
  bool promoted = false;
};

struct JobPage {
  std::vector<Job> jobs;        // newest first
  std::string next_page_token;  // empty when this is the last page
};

// One entry of a job's append-only event log. Numbered per job: seq 1, 2, 3, ...
struct JobEvent {
  std::string job_id;
  int64_t seq = 0;
  std::string type;     // e.g. "state", "progress", "eval", "version"; "state" is written by the registry
  std::string payload;  // JSON text
  int64_t created_at_us = 0;
};

// ---- Expert versions and live pointers --------------------------------------------------------

// Input of Registry::PublishVersion. The blob must already be in the BlobStore.
struct NewVersion {
  std::string tenant_id;
  int64_t parent_version = 0;  // 0 = trained from the base; else an existing version of the tenant
  std::string job_id;          // optional: the job that produced it (must be the tenant's)
  std::string slots_json;      // opaque JSON list of (layer, expert)
  std::optional<double> val_loss;
  std::optional<double> base_val_loss;
  std::string blob_digest;
  std::string backbone_sha256;  // digest of the backbone it was trained on; "" = not known
  std::string method;           // "esft" or "lora" ("" = not known: expert-only)
  int64_t lora_rank = 0;        // method "lora" only
  // The promotion gate (migration 8): general-ability losses and the decision with its reason.
  std::optional<double> general_loss;
  std::optional<double> base_general_loss;
  std::string promotion_decision;  // "promote" | "keep" | "not_requested" | "" (not decided by a gate)
  std::string promotion_reason;
};

// Immutable once written.
struct ExpertVersion {
  std::string tenant_id;
  int64_t version = 0;
  int64_t parent_version = 0;
  std::string job_id;
  std::string slots_json;
  std::optional<double> val_loss;
  std::optional<double> base_val_loss;
  std::string sha256;  // blob digest of the weights (safetensors)
  int64_t size_bytes = 0;
  int64_t created_at_us = 0;
  bool live = false;  // computed at read time: is this the tenant's live version
  // Digest of the backbone it was trained on (migration 3). "" for rows published before migration 3
  // (their blob's metadata carries it: services/version_backbone.h) or by a caller that did not know it.
  std::string backbone_sha256;
  // How it was trained (migration 6): "esft" or "lora"; "" for rows published before (expert-only).
  std::string method;
  int64_t lora_rank = 0;  // method "lora" only
  // The promotion gate's numbers and decision (migration 8; NULL / "" on older rows).
  std::optional<double> general_loss;
  std::optional<double> base_general_loss;
  std::string promotion_decision;
  std::string promotion_reason;
};

// A process following the registry (tessera-server --role inference|trainer; Registry::HeartbeatReplica).
struct Replica {
  std::string replica_id;     // unique per process (by default its host name and port)
  std::string role;           // "inference" | "trainer"
  std::string address;        // where it serves gRPC (HOST:PORT), for operators
  int64_t applied_seq = 0;    // change-feed sequence whose live-pointer moves it serves
  int64_t started_at_us = 0;
  int64_t heartbeat_at_us = 0;
};

enum class ChangeKind { kPublish, kPromote, kRollback };
std::string_view ChangeKindName(ChangeKind kind);  // "publish" | "promote" | "rollback"

// One entry of the global change feed (Registry::ListChangesSince): bumped in the same transaction as a
// publish or a live-pointer move, so a follower that polls `seq` never misses a move.
struct Change {
  int64_t seq = 0;
  std::string tenant_id;
  ChangeKind kind = ChangeKind::kPublish;
  int64_t version = 0;        // publish: the new version; promote/rollback: the new live version
  int64_t live_version = 0;   // the tenant's live version after this change
  int64_t previous_live = 0;  // the tenant's live version before this change
  std::string actor;
  int64_t created_at_us = 0;
};

// Result of Promote / Rollback.
struct LiveMove {
  std::string tenant_id;
  int64_t previous_live = 0;
  int64_t live_version = 0;
  bool changed = false;  // false: the target was already live (no-op, nothing written)
  int64_t seq = 0;       // change sequence of the move; the current sequence when !changed
};

// What Registry::PublishJobVersion committed.
struct PublishedJob {
  ExpertVersion version;         // the job's version (live set when it was promoted)
  Job job;                       // the job, now SUCCEEDED with result_version
  std::optional<LiveMove> move;  // the live-pointer move, when promoting changed it
  bool reused = false;           // the job already had this version (published by an earlier attempt)
};

// ---- Audit ------------------------------------------------------------------------------------

struct AuditEntry {
  int64_t id = 0;      // increasing
  std::string actor;   // API key id, or "system"
  std::string action;  // e.g. "tenant.create", "version.promote"
  std::string target;  // e.g. "tenant/acme", "tenant/acme/version/3", "job/job_x"
  std::string detail;  // free text / JSON
  int64_t created_at_us = 0;
  std::string tenant_id;      // the tenant the entry concerns; "" for none (blobs, ADMIN keys)
  std::string result = "OK";  // "OK", or the canonical code of a refused mutation ("PERMISSION_DENIED")
};

// Filters of Registry::QueryAudit; empty / 0 = any.
struct AuditQuery {
  std::string tenant_id;
  std::string actor;
  std::string action;  // exact, or a prefix ending in '.' or '*' ("job." / "job*": every job action)
  int64_t since_us = 0;  // created_at_us >= since_us
  int64_t until_us = 0;  // created_at_us < until_us
  int page_size = 0;     // <= 0 -> 100, capped at 1000
  std::string page_token;
};

struct AuditPage {
  std::vector<AuditEntry> entries;  // newest first
  std::string next_page_token;      // empty on the last page
};

// What Registry::DeleteTenant removed. The blobs are not deleted by it: `blob_digests` are the ones its
// rows named, for Registry::DeleteBlobsIfUnreferenced once nothing serves them any more.
struct TenantDeletion {
  std::string tenant_id;
  std::vector<std::string> key_ids;
  int64_t datasets = 0;
  int64_t versions = 0;
  int64_t jobs = 0;
  std::vector<std::string> blob_digests;
};

struct GcStats {
  int64_t blobs_scanned = 0;
  int64_t blobs_deleted = 0;
  int64_t bytes_freed = 0;
  int64_t blobs_kept_grace = 0;  // unreferenced but younger than the grace period
};

}  // namespace tessera::storage
