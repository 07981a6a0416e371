// Registry schema. All timestamps are unix microseconds. See migrations.h for the rules.
#include "storage/migrations.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"
#include "storage/types.h"

namespace tessera::storage {
namespace {

// Migration 1: the initial schema.
constexpr char kMigration1[] = R"sql(
CREATE TABLE tenants (
  tenant_id     TEXT PRIMARY KEY,
  display_name  TEXT NOT NULL,
  created_at_us INTEGER NOT NULL,
  live_version  INTEGER NOT NULL DEFAULT 0 CHECK (live_version >= 0),
  -- seq (in changes) of the promote/rollback that made the current live version; 0 = never moved.
  live_seq      INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE api_keys (
  key_id        TEXT PRIMARY KEY,
  tenant_id     TEXT REFERENCES tenants(tenant_id),
  role          TEXT NOT NULL CHECK (role IN ('TENANT', 'ADMIN')),
  secret_sha256 TEXT NOT NULL,
  created_at_us INTEGER NOT NULL,
  revoked_at_us INTEGER NOT NULL DEFAULT 0,
  CHECK ((role = 'ADMIN') = (tenant_id IS NULL))
);
CREATE INDEX api_keys_by_tenant ON api_keys(tenant_id);

CREATE TABLE datasets (
  id            INTEGER PRIMARY KEY,
  dataset_id    TEXT NOT NULL UNIQUE,
  tenant_id     TEXT NOT NULL REFERENCES tenants(tenant_id),
  name          TEXT NOT NULL,
  format        TEXT NOT NULL,
  blob_digest   TEXT NOT NULL,
  size_bytes    INTEGER NOT NULL,
  num_examples  INTEGER NOT NULL,
  num_tokens    INTEGER NOT NULL,
  created_at_us INTEGER NOT NULL
);
CREATE INDEX datasets_by_tenant ON datasets(tenant_id, id);
CREATE INDEX datasets_by_blob ON datasets(blob_digest);

CREATE TABLE jobs (
  id                    INTEGER PRIMARY KEY,
  job_id                TEXT NOT NULL UNIQUE,
  tenant_id             TEXT NOT NULL REFERENCES tenants(tenant_id),
  spec                  TEXT NOT NULL,
  training_dataset_id   TEXT NOT NULL,
  validation_dataset_id TEXT NOT NULL DEFAULT '',
  idempotency_key       TEXT,
  state                 TEXT NOT NULL
      CHECK (state IN ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
  attempts              INTEGER NOT NULL DEFAULT 0,
  lease_owner           TEXT NOT NULL DEFAULT '',
  lease_expires_at_us   INTEGER NOT NULL DEFAULT 0,
  created_at_us         INTEGER NOT NULL,
  started_at_us         INTEGER NOT NULL DEFAULT 0,
  finished_at_us        INTEGER NOT NULL DEFAULT 0,
  error                 TEXT NOT NULL DEFAULT '',
  result_version        INTEGER,
  promoted              INTEGER NOT NULL DEFAULT 0,
  step                  INTEGER NOT NULL DEFAULT 0,
  max_steps             INTEGER NOT NULL DEFAULT 0,
  train_loss            REAL NOT NULL DEFAULT 0,
  val_loss              REAL NOT NULL DEFAULT 0,
  tokens_per_second     REAL NOT NULL DEFAULT 0,
  selected_slots        TEXT NOT NULL DEFAULT '',
  UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX jobs_by_tenant ON jobs(tenant_id, id);
CREATE INDEX jobs_by_state ON jobs(state, tenant_id, id);

CREATE TABLE job_events (
  job_id        TEXT NOT NULL REFERENCES jobs(job_id),
  seq           INTEGER NOT NULL CHECK (seq >= 1),
  type          TEXT NOT NULL,
  payload       TEXT NOT NULL,
  created_at_us INTEGER NOT NULL,
  PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

CREATE TABLE versions (
  tenant_id      TEXT NOT NULL REFERENCES tenants(tenant_id),
  version        INTEGER NOT NULL CHECK (version >= 1),
  parent_version INTEGER NOT NULL CHECK (parent_version >= 0 AND parent_version < version),
  job_id         TEXT NOT NULL DEFAULT '',
  slots_json     TEXT NOT NULL DEFAULT '',
  val_loss       REAL,
  base_val_loss  REAL,
  blob_digest    TEXT NOT NULL,
  size_bytes     INTEGER NOT NULL,
  created_at_us  INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, version)
) WITHOUT ROWID;
CREATE INDEX versions_by_blob ON versions(blob_digest);
CREATE TRIGGER versions_immutable BEFORE UPDATE ON versions
  BEGIN SELECT RAISE(ABORT, 'expert versions are immutable'); END;
CREATE TRIGGER versions_undeletable BEFORE DELETE ON versions
  BEGIN SELECT RAISE(ABORT, 'expert versions are immutable'); END;

-- The global change feed: publishes and live-pointer moves. Promote/rollback rows are also the live
-- pointer history; undo_seq is where a plain Rollback from that state returns to
-- (NULL: nowhere, 0: version 0 with nothing before it, >0: the state made by that change).
CREATE TABLE changes (
  seq           INTEGER PRIMARY KEY AUTOINCREMENT,
  tenant_id     TEXT NOT NULL REFERENCES tenants(tenant_id),
  kind          TEXT NOT NULL CHECK (kind IN ('publish', 'promote', 'rollback')),
  version       INTEGER NOT NULL,
  live_version  INTEGER NOT NULL,
  previous_live INTEGER NOT NULL,
  undo_seq      INTEGER,
  actor         TEXT NOT NULL,
  created_at_us INTEGER NOT NULL
);
CREATE INDEX changes_by_tenant ON changes(tenant_id, kind, seq);

CREATE TABLE audit_log (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  actor         TEXT NOT NULL,
  action        TEXT NOT NULL,
  target        TEXT NOT NULL,
  detail        TEXT NOT NULL,
  created_at_us INTEGER NOT NULL
);
)sql";

// Migration 2: resumable jobs (checkpoint) and round-robin fairness state for the job queue.
constexpr char kMigration2[] = R"sql(
ALTER TABLE jobs ADD COLUMN checkpoint TEXT NOT NULL DEFAULT '';
CREATE TABLE queue_turns (
  tenant_id  TEXT PRIMARY KEY REFERENCES tenants(tenant_id),
  last_claim INTEGER NOT NULL
);
CREATE INDEX jobs_running_lease ON jobs(state, lease_expires_at_us);
)sql";

// Migration 3: the digest of the backbone each version was trained on (services/version_backbone.h).
// Rows published before it keep '' here: their overlay blob's safetensors metadata carries the same
// digest (key backbone_sha256, written by every Tessera trainer), which the services layer reads
// instead. Versions are immutable, so the column is never back-filled.
constexpr char kMigration3[] = R"sql(
ALTER TABLE versions ADD COLUMN backbone_sha256 TEXT NOT NULL DEFAULT '';
)sql";

// Migration 4: API key lifecycle. Scopes as comma-separated names (existing keys get all three, so they
// behave as before), an optional expiry (0 = never) and the coarse last-use time (0 = never used).
constexpr char kMigration4[] = R"sql(
ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT 'inference,fine-tune,read';
ALTER TABLE api_keys ADD COLUMN expires_at_us INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN last_used_at_us INTEGER NOT NULL DEFAULT 0;
)sql";

// Migration 5: tenant deletion. Versions stay immutable: no UPDATE ever, and a DELETE only inside
// Registry::DeleteTenant's transaction, which names the tenant in tenant_deletions first and removes
// that row again before committing (so the table is empty outside that transaction, and a crash in the
// middle rolls everything back). Any other DELETE of a version row still aborts.
constexpr char kMigration5[] = R"sql(
CREATE TABLE tenant_deletions (
  tenant_id     TEXT PRIMARY KEY,
  started_at_us INTEGER NOT NULL
);
DROP TRIGGER versions_undeletable;
CREATE TRIGGER versions_undeletable BEFORE DELETE ON versions
  WHEN NOT EXISTS (SELECT 1 FROM tenant_deletions WHERE tenant_id = OLD.tenant_id)
  BEGIN SELECT RAISE(ABORT, 'expert versions are immutable'); END;
)sql";

// Migration 6: how a version was trained (method "esft" / "lora"; '' for rows from before it, which are all
// expert-only) and its LoRA rank (0 unless lora). The blob is self-describing too (core/model/lora_overlay.h).
constexpr char kMigration6[] = R"sql(
ALTER TABLE versions ADD COLUMN method TEXT NOT NULL DEFAULT '';
ALTER TABLE versions ADD COLUMN lora_rank INTEGER NOT NULL DEFAULT 0;
)sql";

// Migration 7: the audit log names the tenant an entry concerns and the outcome ("OK", or the canonical
// code of a refused mutation), indexed for Admin.ListAuditEvents; older entries get their tenant from
// their target where it still resolves. Jobs keep the request that created them (canonical JSON,
// without the idempotency key) so that a replay of an idempotency key with other parameters is refused
// naming the field; '' for older jobs (their replays are not checked).
constexpr char kMigration7[] = R"sql(
ALTER TABLE audit_log ADD COLUMN tenant_id TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN result TEXT NOT NULL DEFAULT 'OK';
UPDATE audit_log SET tenant_id = substr(target, 8, instr(substr(target, 8) || '/', '/') - 1)
  WHERE target LIKE 'tenant/%';
UPDATE audit_log SET tenant_id = COALESCE((SELECT tenant_id FROM jobs WHERE 'job/' || jobs.job_id = audit_log.target), '')
  WHERE target LIKE 'job/%';
UPDATE audit_log SET tenant_id = COALESCE((SELECT tenant_id FROM datasets WHERE 'dataset/' || datasets.dataset_id = audit_log.target), '')
  WHERE target LIKE 'dataset/%';
UPDATE audit_log SET tenant_id = COALESCE((SELECT tenant_id FROM api_keys WHERE 'apikey/' || api_keys.key_id = audit_log.target), '')
  WHERE target LIKE 'apikey/%';
CREATE INDEX audit_by_tenant ON audit_log(tenant_id, id);
CREATE INDEX audit_by_actor ON audit_log(actor, id);
CREATE INDEX audit_by_time ON audit_log(created_at_us);
ALTER TABLE jobs ADD COLUMN request TEXT NOT NULL DEFAULT '';
)sql";

// Migration 8: the promotion gate's numbers and decision on each version (issue 16): general-ability
// loss of the version and of the backbone on the server's general text, and the gate's decision with
// its reason. Decided before the row is written (versions are immutable); older rows read NULL / ''.
constexpr char kMigration8[] = R"sql(
ALTER TABLE versions ADD COLUMN general_loss REAL;
ALTER TABLE versions ADD COLUMN base_general_loss REAL;
ALTER TABLE versions ADD COLUMN promotion_decision TEXT NOT NULL DEFAULT '';
ALTER TABLE versions ADD COLUMN promotion_reason TEXT NOT NULL DEFAULT '';
)sql";

// Migration 9: the tokens a dataset's loss is on (completions + EOS), an input of the auto
// hyperparameter rule (core/train/auto_hparams.h). Rows stored before it keep 0 (unknown).
constexpr char kMigration9[] = R"sql(
ALTER TABLE datasets ADD COLUMN num_loss_tokens INTEGER NOT NULL DEFAULT 0;
)sql";

// Migration 10: the caller's label of a job (CreateJobRequest.suffix, OpenAI's `suffix`); '' = none.
constexpr char kMigration10[] = R"sql(
ALTER TABLE jobs ADD COLUMN suffix TEXT NOT NULL DEFAULT '';
)sql";

// Migration 11: the processes that follow this registry (tessera-server --role inference|trainer), so
// the control plane knows which change-feed sequence each inference replica serves (Promote waits for
// them). A row is rewritten by its process every heartbeat and removed when it stops cleanly.
constexpr char kMigration11[] = R"sql(
CREATE TABLE replicas (
  replica_id      TEXT PRIMARY KEY,
  role            TEXT NOT NULL,
  address         TEXT NOT NULL,
  applied_seq     INTEGER NOT NULL DEFAULT 0,
  started_at_us   INTEGER NOT NULL,
  heartbeat_at_us INTEGER NOT NULL
);
)sql";

// Migration 12: per-tenant quota overrides (storage/quotas.h). NULL = the server's default applies;
// 0 = unlimited. A tenant without a row uses every default.
constexpr char kMigration12[] = R"sql(
CREATE TABLE tenant_quotas (
  tenant_id           TEXT PRIMARY KEY REFERENCES tenants(tenant_id),
  requests_per_second INTEGER CHECK (requests_per_second >= 0),
  tokens_per_minute   INTEGER CHECK (tokens_per_minute >= 0),
  max_running_jobs    INTEGER CHECK (max_running_jobs >= 0),
  max_queued_jobs     INTEGER CHECK (max_queued_jobs >= 0),
  storage_bytes       INTEGER CHECK (storage_bytes >= 0),
  max_versions        INTEGER CHECK (max_versions >= 0),
  updated_at_us       INTEGER NOT NULL
);
)sql";

// ---- PostgreSQL: the same numbered migrations, written for PostgreSQL -------------------------------
// Types: INTEGER -> BIGINT (microsecond timestamps overflow int4), REAL -> DOUBLE PRECISION, rowid
// aliases -> identity columns, triggers -> PL/pgSQL functions. The change feed's seq is not an identity:
// it comes from the one-row change_seq counter, updated in the same transaction (see registry_versions.cc),
// so seqs are handed out in commit order (an identity would let a later seq commit before an earlier
// one and a follower skip the earlier) and never go backwards when DeleteTenant removes rows.
// blob_refs_lock is never read: LOCK TABLE on it serializes the transactions that check a blob exists
// against the garbage collector (registry_internal.h LockBlobReferences).
constexpr char kPgMigration1[] = R"sql(
CREATE TABLE tenants (
  tenant_id     TEXT PRIMARY KEY,
  display_name  TEXT NOT NULL,
  created_at_us BIGINT NOT NULL,
  live_version  BIGINT NOT NULL DEFAULT 0 CHECK (live_version >= 0),
  live_seq      BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE api_keys (
  key_id        TEXT PRIMARY KEY,
  tenant_id     TEXT REFERENCES tenants(tenant_id),
  role          TEXT NOT NULL CHECK (role IN ('TENANT', 'ADMIN')),
  secret_sha256 TEXT NOT NULL,
  created_at_us BIGINT NOT NULL,
  revoked_at_us BIGINT NOT NULL DEFAULT 0,
  CHECK ((role = 'ADMIN') = (tenant_id IS NULL))
);
CREATE INDEX api_keys_by_tenant ON api_keys(tenant_id);

CREATE TABLE datasets (
  id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  dataset_id    TEXT NOT NULL UNIQUE,
  tenant_id     TEXT NOT NULL REFERENCES tenants(tenant_id),
  name          TEXT NOT NULL,
  format        TEXT NOT NULL,
  blob_digest   TEXT NOT NULL,
  size_bytes    BIGINT NOT NULL,
  num_examples  BIGINT NOT NULL,
  num_tokens    BIGINT NOT NULL,
  created_at_us BIGINT NOT NULL
);
CREATE INDEX datasets_by_tenant ON datasets(tenant_id, id);
CREATE INDEX datasets_by_blob ON datasets(blob_digest);

CREATE TABLE jobs (
  id                    BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  job_id                TEXT NOT NULL UNIQUE,
  tenant_id             TEXT NOT NULL REFERENCES tenants(tenant_id),
  spec                  TEXT NOT NULL,
  training_dataset_id   TEXT NOT NULL,
  validation_dataset_id TEXT NOT NULL DEFAULT '',
  idempotency_key       TEXT,
  state                 TEXT NOT NULL
      CHECK (state IN ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
  attempts              BIGINT NOT NULL DEFAULT 0,
  lease_owner           TEXT NOT NULL DEFAULT '',
  lease_expires_at_us   BIGINT NOT NULL DEFAULT 0,
  created_at_us         BIGINT NOT NULL,
  started_at_us         BIGINT NOT NULL DEFAULT 0,
  finished_at_us        BIGINT NOT NULL DEFAULT 0,
  error                 TEXT NOT NULL DEFAULT '',
  result_version        BIGINT,
  promoted              BIGINT NOT NULL DEFAULT 0,
  step                  BIGINT NOT NULL DEFAULT 0,
  max_steps             BIGINT NOT NULL DEFAULT 0,
  train_loss            DOUBLE PRECISION NOT NULL DEFAULT 0,
  val_loss              DOUBLE PRECISION NOT NULL DEFAULT 0,
  tokens_per_second     DOUBLE PRECISION NOT NULL DEFAULT 0,
  selected_slots        TEXT NOT NULL DEFAULT '',
  UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX jobs_by_tenant ON jobs(tenant_id, id);
CREATE INDEX jobs_by_state ON jobs(state, tenant_id, id);

CREATE TABLE job_events (
  job_id        TEXT NOT NULL REFERENCES jobs(job_id),
  seq           BIGINT NOT NULL CHECK (seq >= 1),
  type          TEXT NOT NULL,
  payload       TEXT NOT NULL,
  created_at_us BIGINT NOT NULL,
  PRIMARY KEY (job_id, seq)
);

CREATE TABLE versions (
  tenant_id      TEXT NOT NULL REFERENCES tenants(tenant_id),
  version        BIGINT NOT NULL CHECK (version >= 1),
  parent_version BIGINT NOT NULL CHECK (parent_version >= 0 AND parent_version < version),
  job_id         TEXT NOT NULL DEFAULT '',
  slots_json     TEXT NOT NULL DEFAULT '',
  val_loss       DOUBLE PRECISION,
  base_val_loss  DOUBLE PRECISION,
  blob_digest    TEXT NOT NULL,
  size_bytes     BIGINT NOT NULL,
  created_at_us  BIGINT NOT NULL,
  PRIMARY KEY (tenant_id, version)
);
CREATE INDEX versions_by_blob ON versions(blob_digest);
CREATE FUNCTION versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'expert versions are immutable';
END $$;
CREATE TRIGGER versions_immutable BEFORE UPDATE ON versions
  FOR EACH ROW EXECUTE FUNCTION versions_immutable();
CREATE TRIGGER versions_undeletable BEFORE DELETE ON versions
  FOR EACH ROW EXECUTE FUNCTION versions_immutable();

CREATE TABLE change_seq (
  id  INTEGER PRIMARY KEY CHECK (id = 1),
  seq BIGINT NOT NULL
);
INSERT INTO change_seq(id, seq) VALUES (1, 0);
CREATE TABLE changes (
  seq           BIGINT PRIMARY KEY,
  tenant_id     TEXT NOT NULL REFERENCES tenants(tenant_id),
  kind          TEXT NOT NULL CHECK (kind IN ('publish', 'promote', 'rollback')),
  version       BIGINT NOT NULL,
  live_version  BIGINT NOT NULL,
  previous_live BIGINT NOT NULL,
  undo_seq      BIGINT,
  actor         TEXT NOT NULL,
  created_at_us BIGINT NOT NULL
);
CREATE INDEX changes_by_tenant ON changes(tenant_id, kind, seq);

CREATE TABLE audit_log (
  id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  actor         TEXT NOT NULL,
  action        TEXT NOT NULL,
  target        TEXT NOT NULL,
  detail        TEXT NOT NULL,
  created_at_us BIGINT NOT NULL
);

CREATE TABLE blob_refs_lock (id INTEGER PRIMARY KEY);
)sql";

constexpr char kPgMigration2[] = R"sql(
ALTER TABLE jobs ADD COLUMN checkpoint TEXT NOT NULL DEFAULT '';
CREATE TABLE queue_turns (
  tenant_id  TEXT PRIMARY KEY REFERENCES tenants(tenant_id),
  last_claim BIGINT NOT NULL
);
CREATE INDEX jobs_running_lease ON jobs(state, lease_expires_at_us);
)sql";

constexpr char kPgMigration3[] = R"sql(
ALTER TABLE versions ADD COLUMN backbone_sha256 TEXT NOT NULL DEFAULT '';
)sql";

constexpr char kPgMigration4[] = R"sql(
ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT 'inference,fine-tune,read';
ALTER TABLE api_keys ADD COLUMN expires_at_us BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN last_used_at_us BIGINT NOT NULL DEFAULT 0;
)sql";

constexpr char kPgMigration5[] = R"sql(
CREATE TABLE tenant_deletions (
  tenant_id     TEXT PRIMARY KEY,
  started_at_us BIGINT NOT NULL
);
CREATE FUNCTION versions_undeletable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tenant_deletions WHERE tenant_id = OLD.tenant_id) THEN
    RAISE EXCEPTION 'expert versions are immutable';
  END IF;
  RETURN OLD;
END $$;
DROP TRIGGER versions_undeletable ON versions;
CREATE TRIGGER versions_undeletable BEFORE DELETE ON versions
  FOR EACH ROW EXECUTE FUNCTION versions_undeletable();
)sql";

constexpr char kPgMigration6[] = R"sql(
ALTER TABLE versions ADD COLUMN method TEXT NOT NULL DEFAULT '';
ALTER TABLE versions ADD COLUMN lora_rank BIGINT NOT NULL DEFAULT 0;
)sql";

constexpr char kPgMigration7[] = R"sql(
ALTER TABLE audit_log ADD COLUMN tenant_id TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN result TEXT NOT NULL DEFAULT 'OK';
UPDATE audit_log SET tenant_id = split_part(substr(target, 8), '/', 1)
  WHERE target LIKE 'tenant/%';
UPDATE audit_log SET tenant_id = COALESCE((SELECT tenant_id FROM jobs WHERE 'job/' || jobs.job_id = audit_log.target), '')
  WHERE target LIKE 'job/%';
UPDATE audit_log SET tenant_id = COALESCE((SELECT tenant_id FROM datasets WHERE 'dataset/' || datasets.dataset_id = audit_log.target), '')
  WHERE target LIKE 'dataset/%';
UPDATE audit_log SET tenant_id = COALESCE((SELECT tenant_id FROM api_keys WHERE 'apikey/' || api_keys.key_id = audit_log.target), '')
  WHERE target LIKE 'apikey/%';
CREATE INDEX audit_by_tenant ON audit_log(tenant_id, id);
CREATE INDEX audit_by_actor ON audit_log(actor, id);
CREATE INDEX audit_by_time ON audit_log(created_at_us);
ALTER TABLE jobs ADD COLUMN request TEXT NOT NULL DEFAULT '';
)sql";

constexpr char kPgMigration8[] = R"sql(
ALTER TABLE versions ADD COLUMN general_loss DOUBLE PRECISION;
ALTER TABLE versions ADD COLUMN base_general_loss DOUBLE PRECISION;
ALTER TABLE versions ADD COLUMN promotion_decision TEXT NOT NULL DEFAULT '';
ALTER TABLE versions ADD COLUMN promotion_reason TEXT NOT NULL DEFAULT '';
)sql";

constexpr char kPgMigration9[] = R"sql(
ALTER TABLE datasets ADD COLUMN num_loss_tokens BIGINT NOT NULL DEFAULT 0;
)sql";

constexpr char kPgMigration10[] = R"sql(
ALTER TABLE jobs ADD COLUMN suffix TEXT NOT NULL DEFAULT '';
)sql";

constexpr char kPgMigration11[] = R"sql(
CREATE TABLE replicas (
  replica_id      TEXT PRIMARY KEY,
  role            TEXT NOT NULL,
  address         TEXT NOT NULL,
  applied_seq     BIGINT NOT NULL DEFAULT 0,
  started_at_us   BIGINT NOT NULL,
  heartbeat_at_us BIGINT NOT NULL
);
)sql";

constexpr char kPgMigration12[] = R"sql(
CREATE TABLE tenant_quotas (
  tenant_id           TEXT PRIMARY KEY REFERENCES tenants(tenant_id),
  requests_per_second BIGINT CHECK (requests_per_second >= 0),
  tokens_per_minute   BIGINT CHECK (tokens_per_minute >= 0),
  max_running_jobs    BIGINT CHECK (max_running_jobs >= 0),
  max_queued_jobs     BIGINT CHECK (max_queued_jobs >= 0),
  storage_bytes       BIGINT CHECK (storage_bytes >= 0),
  max_versions        BIGINT CHECK (max_versions >= 0),
  updated_at_us       BIGINT NOT NULL
);
)sql";

struct Migration {
  const char* sqlite;
  const char* postgres;
};

// Migration N is Migrations()[N - 1] on both engines.
const std::vector<Migration>& Migrations() {
  static const std::vector<Migration> kAll = {
      {kMigration1, kPgMigration1}, {kMigration2, kPgMigration2}, {kMigration3, kPgMigration3},
      {kMigration4, kPgMigration4}, {kMigration5, kPgMigration5}, {kMigration6, kPgMigration6},
      {kMigration7, kPgMigration7}, {kMigration8, kPgMigration8}, {kMigration9, kPgMigration9},
      {kMigration10, kPgMigration10}, {kMigration11, kPgMigration11}, {kMigration12, kPgMigration12},
  };
  return kAll;
}

}  // namespace

int LatestMigration() { return static_cast<int>(Migrations().size()); }

namespace {

// Applies the pending migrations up to `target` inside the caller's write transaction.
absl::Status MigrateIn(Conn& c, int target) {
  const bool pg = c.dialect() == Dialect::kPostgres;
  // BIGINT on PostgreSQL: applied_at_us is in microseconds. (SQLite's INTEGER is 64-bit already.)
  absl::Status s = c.ExecScript(absl::StrCat("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER "
                                             "PRIMARY KEY, applied_at_us ", pg ? "BIGINT" : "INTEGER",
                                             " NOT NULL)"));
  if (!s.ok()) return s;
  absl::StatusOr<int64_t> current = c.QueryInt("SELECT MAX(version) FROM schema_migrations", 0);
  if (!current.ok()) return current.status();
  if (*current > LatestMigration()) {
    return absl::FailedPreconditionError(absl::StrCat("registry schema is at migration ", *current,
                                                      ", newer than this binary's latest (", LatestMigration(),
                                                      ")"));
  }
  for (int v = static_cast<int>(*current) + 1; v <= target; ++v) {
    const Migration& m = Migrations()[v - 1];
    if (pg && m.postgres == nullptr) {
      return absl::InternalError(absl::StrCat("migration ", v, " has no PostgreSQL version (storage/migrations.cc)"));
    }
    s = c.ExecScript(pg ? m.postgres : m.sqlite);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat("migration ", v, ": ", s.message()));
    s = c.Exec("INSERT INTO schema_migrations(version, applied_at_us) VALUES (?1, ?2)", static_cast<int64_t>(v),
               NowMicros());
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

// Key of the session advisory lock that serializes migrations on one PostgreSQL database.
constexpr char kPgMigrationLock[] = "7305411757366452736";

}  // namespace

absl::Status Migrate(Database& db, int target) {
  if (target < 0) target = LatestMigration();
  if (target > LatestMigration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("migrate_to ", target, " is beyond the latest migration ", LatestMigration()));
  }
  if (db.dialect() == Dialect::kSqlite) {
    // BEGIN IMMEDIATE: concurrent openers queue on SQLite's write lock.
    return db.Write(false, [&](Conn& c) { return MigrateIn(c, target); });
  }
  // PostgreSQL: concurrent first opens would collide in the system catalogs (DDL is not serializable
  // like data), so openers queue on an advisory lock taken before the transaction, whose snapshot then
  // includes the previous opener's migrations.
  return db.Raw([&](Conn& c) -> absl::Status {
    RETURN_IF_ERROR(c.ExecScript(absl::StrCat("SELECT pg_advisory_lock(", kPgMigrationLock, ")")));
    absl::Status s = c.AttemptWrite(false, [&](Conn& tx) { return MigrateIn(tx, target); });
    (void)c.ExecScript(absl::StrCat("SELECT pg_advisory_unlock(", kPgMigrationLock, ")"));
    return s;
  });
}

}  // namespace tessera::storage
