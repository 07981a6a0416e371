// Registry: opening, schema, tenants, API keys, audit and the in-process wait/notify machinery.
// Datasets, jobs, versions and GC live in registry_<topic>.cc.
#include "storage/registry.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "storage/sv.h"
#include "core/util/status_macros.h"
#include "storage/migrations.h"
#include "storage/random_id.h"
#include "storage/registry_internal.h"
#include "core/util/sha256.h"
#include "storage/database.h"

namespace tessera::storage {

using internal::RequireTenant;

namespace {

constexpr int kKeyIdLength = 12;
constexpr int kSecretRandomLength = 43;  // 43 base62 characters ~ 256 bits
constexpr std::string_view kSecretPrefix = "tsk_";

Role ParseRole(const std::string& s) { return s == "ADMIN" ? Role::kAdmin : Role::kTenant; }

ApiKey ReadKey(const Stmt& st) {
  ApiKey k;
  k.key_id = st.Text(0);
  k.tenant_id = st.Text(1);
  k.role = ParseRole(st.Text(2));
  k.created_at_us = st.Int(3);
  k.revoked_at_us = st.Int(4);
  // Stored by this code only; an unparsable value would be a corrupt row: grant nothing rather than all.
  k.scopes = ParseScopes(st.Text(5)).value_or(0);
  k.expires_at_us = st.Int(6);
  k.last_used_at_us = st.Int(7);
  return k;
}

constexpr char kKeyColumns[] =
    "key_id, COALESCE(tenant_id, ''), role, created_at_us, revoked_at_us, scopes, expires_at_us, "
    "last_used_at_us";

// last_used_at_us granularity: a key's use is written at most this often.
constexpr int64_t kTouchIntervalUs = 60 * 1000 * 1000;

bool ConstantTimeEqual(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

Registry::Registry(std::string data_dir, Options options, std::unique_ptr<BlobStore> owned_blobs,
                   std::unique_ptr<Database> pool)
    : data_dir_(std::move(data_dir)),
      options_(std::move(options)),
      owned_blobs_(std::move(owned_blobs)),
      blobs_(owned_blobs_ != nullptr ? static_cast<BlobBackend*>(owned_blobs_.get()) : options_.blob_backend.get()),
      pool_(std::move(pool)) {
  quotas_.defaults = options_.default_quotas;
}

absl::Status Registry::RequireOwnedBlobs(std::string_view what) const {
  if (owned_blobs_ != nullptr) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      std::string(what), ": this process does not own the blobs (they live on the control plane, "
      "Registry::Options::blob_backend); blob garbage collection runs only there (--role all or control)"));
}

Registry::~Registry() = default;

absl::StatusOr<std::unique_ptr<Registry>> Registry::Open(const std::string& data_dir,
                                                         const Options& options) {
  if (data_dir.empty()) return absl::InvalidArgumentError("data_dir is empty");
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create data dir ", data_dir, ": ", ec.message()));
  }
  // Owned blobs (data_dir/blobs) unless another process owns them (Options::blob_backend).
  std::unique_ptr<BlobStore> blobs;
  if (options.blob_backend == nullptr) {
    ASSIGN_OR_RETURN(blobs, BlobStore::Create(data_dir + "/blobs"));
  }
  std::string db_target;
  if (options.database.empty() || options.database == "sqlite") {
    db_target = data_dir + "/registry.db";
  } else if (Database::IsPostgresUrl(options.database)) {
    db_target = options.database;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("registry database '", options.database,
                                                   "': expected sqlite or postgres://USER@HOST:PORT/DB"));
  }
  Database::Options db_options;
  db_options.busy_timeout = options.busy_timeout;
  db_options.busy_deadline = options.busy_deadline;
  ASSIGN_OR_RETURN(std::unique_ptr<Database> pool, Database::Open(db_target, db_options));
  RETURN_IF_ERROR(Migrate(*pool, options.migrate_to));
  std::unique_ptr<Registry> r(
      new Registry(data_dir, options, std::move(blobs), std::move(pool)));
  const int target = options.migrate_to < 0 ? LatestMigration() : options.migrate_to;
  if (target < LatestMigration()) {
    // A migration test's registry: quota overrides only once their table exists.
    ASSIGN_OR_RETURN(int schema, r->SchemaVersion());
    r->quotas_.overrides = schema >= kQuotaMigration;
  }
  if (options.requeue_expired_on_open && target == LatestMigration()) {
    RETURN_IF_ERROR(r->RequeueExpiredLeases(options.max_job_attempts).status());
  }
  return r;
}

bool Registry::on_postgres() const { return pool_->dialect() == Dialect::kPostgres; }

void Registry::NotifyWaiters() {
  {
    std::lock_guard<std::mutex> lock(wait_mu_);
    ++wait_epoch_;
  }
  wait_cv_.notify_all();
}

// ---- Schema -------------------------------------------------------------------------------------

int Registry::LatestSchemaVersion() { return LatestMigration(); }

absl::StatusOr<int> Registry::SchemaVersion() {
  int64_t v = 0;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    ASSIGN_OR_RETURN(v, c.QueryInt("SELECT MAX(version) FROM schema_migrations", 0));
    return absl::OkStatus();
  }));
  return static_cast<int>(v);
}

absl::Status Registry::CheckIntegrity() {
  std::string report;
  if (on_postgres()) {
    // PostgreSQL checks its own pages as it reads them (and with data checksums, if the cluster has
    // them); a full read of every registry table, through each index, surfaces what it finds.
    RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
      report.clear();
      std::vector<std::string> tables;
      {
        ASSIGN_OR_RETURN(Stmt st, c.Prepare("SELECT table_name FROM information_schema.tables WHERE table_schema = "
                                            "current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"));
        while (true) {
          ASSIGN_OR_RETURN(bool row, st.Step());
          if (!row) break;
          tables.push_back(st.Text(0));
        }
      }
      for (const std::string& t : tables) {
        absl::StatusOr<int64_t> n = c.QueryInt(absl::StrCat("SELECT COUNT(*) FROM \"", t, "\""), 0);
        if (!n.ok()) {
          if (absl::IsAborted(n.status())) return n.status();
          return absl::DataLossError(absl::StrCat("registry integrity check failed: table ", t, ": ",
                                                  n.status().message()));
        }
      }
      report = tables.empty() ? "no registry tables" : "ok";
      return absl::OkStatus();
    }));
  } else {
    RETURN_IF_ERROR(pool_->Raw([&](Conn& c) -> absl::Status {
      report.clear();
      ASSIGN_OR_RETURN(Stmt st, c.Prepare("PRAGMA integrity_check"));
      while (true) {
        ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) break;
        if (!report.empty()) report += "; ";
        report += st.Text(0);
      }
      return absl::OkStatus();
    }));
  }
  if (report == "ok") return absl::OkStatus();
  return absl::DataLossError(absl::StrCat("registry integrity_check failed: ", report));
}

// ---- Tenants ------------------------------------------------------------------------------------

absl::StatusOr<Tenant> Registry::CreateTenant(const std::string& tenant_id,
                                              const std::string& display_name,
                                              const std::string& actor) {
  RETURN_IF_ERROR(ValidateTenantId(tenant_id));
  Tenant t{tenant_id, display_name.empty() ? tenant_id : display_name, NowMicros()};
  RETURN_IF_ERROR(pool_->Write(false, [&](Conn& c) -> absl::Status {
    ASSIGN_OR_RETURN(int64_t n,
                     c.QueryInt("SELECT COUNT(*) FROM tenants WHERE tenant_id = ?1", 0, tenant_id));
    if (n > 0) return absl::AlreadyExistsError(absl::StrCat("tenant '", tenant_id, "' already exists"));
    RETURN_IF_ERROR(c.Exec(
        "INSERT INTO tenants(tenant_id, display_name, created_at_us) VALUES (?1, ?2, ?3)",
        t.tenant_id, t.display_name, t.created_at_us));
    return internal::AppendAudit(c, actor, "tenant.create", absl::StrCat("tenant/", tenant_id),
                       absl::StrCat("{\"display_name\":", internal::JsonString(t.display_name), "}"));
  }));
  return t;
}

absl::StatusOr<Tenant> Registry::GetTenant(const std::string& tenant_id) {
  Tenant t;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    ASSIGN_OR_RETURN(Stmt st, c.Prepare("SELECT tenant_id, display_name, created_at_us FROM tenants "
                                        "WHERE tenant_id = ?1",
                                        tenant_id));
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("tenant '", tenant_id, "' not found"));
    t = Tenant{st.Text(0), st.Text(1), st.Int(2)};
    return absl::OkStatus();
  }));
  return t;
}

absl::StatusOr<std::vector<Tenant>> Registry::ListTenants() {
  std::vector<Tenant> out;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    out.clear();
    ASSIGN_OR_RETURN(Stmt st, c.Prepare("SELECT tenant_id, display_name, created_at_us FROM tenants "
                                        "ORDER BY tenant_id"));
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      out.push_back(Tenant{st.Text(0), st.Text(1), st.Int(2)});
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<TenantDeletion> Registry::DeleteTenant(const std::string& tenant_id, const std::string& actor) {
  RETURN_IF_ERROR(ValidateTenantId(tenant_id));
  TenantDeletion out;
  RETURN_IF_ERROR(pool_->Write(true, [&](Conn& c) -> absl::Status {
    out = TenantDeletion();
    out.tenant_id = tenant_id;
    RETURN_IF_ERROR(RequireTenant(c, tenant_id));
    ASSIGN_OR_RETURN(int64_t unfinished,
                     c.QueryInt("SELECT COUNT(*) FROM jobs WHERE tenant_id = ?1 AND state IN ('QUEUED', "
                                "'RUNNING')",
                                0, tenant_id));
    if (unfinished > 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "tenant '", tenant_id, "' has ", unfinished,
          " queued or running job(s): cancel them first (or delete with force)"));
    }
    {
      ASSIGN_OR_RETURN(Stmt st, c.Prepare("SELECT key_id FROM api_keys WHERE tenant_id = ?1", tenant_id));
      while (true) {
        ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) break;
        out.key_ids.push_back(st.Text(0));
      }
    }
    {
      ASSIGN_OR_RETURN(Stmt st, c.Prepare("SELECT blob_digest FROM datasets WHERE tenant_id = ?1 UNION "
                                          "SELECT blob_digest FROM versions WHERE tenant_id = ?1 UNION "
                                          "SELECT checkpoint FROM jobs WHERE tenant_id = ?1 AND "
                                          "checkpoint != ''",
                                          tenant_id));
      while (true) {
        ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) break;
        out.blob_digests.push_back(st.Text(0));
      }
    }
    // Every other table that names tenants (added by later migrations: quotas and the like) goes too,
    // before the tables those might reference. The audit log is history and stays.
    std::vector<std::string> tables;
    {
      ASSIGN_OR_RETURN(
          Stmt st,
          c.Prepare(c.dialect() == Dialect::kPostgres
                        ? "SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
                          "AND column_name = 'tenant_id' AND table_name NOT IN ('tenants', 'audit_log', "
                          "'tenant_deletions', 'datasets', 'versions', 'jobs') ORDER BY table_name"
                        : "SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) p "
                          "WHERE m.type = 'table' AND p.name = 'tenant_id' AND m.name NOT IN "
                          "('tenants', 'audit_log', 'tenant_deletions', 'datasets', "
                          "'versions', 'jobs') ORDER BY m.name"));
      while (true) {
        ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) break;
        tables.push_back(st.Text(0));
      }
    }
    RETURN_IF_ERROR(c.Exec("INSERT INTO tenant_deletions(tenant_id, started_at_us) VALUES (?1, ?2)", tenant_id,
                           NowMicros()));
    RETURN_IF_ERROR(c.Exec("DELETE FROM job_events WHERE job_id IN (SELECT job_id FROM jobs WHERE tenant_id = ?1)",
                           tenant_id));
    for (const std::string& t : tables) {
      RETURN_IF_ERROR(c.Exec(absl::StrCat("DELETE FROM \"", t, "\" WHERE tenant_id = ?1"), tenant_id));
    }
    RETURN_IF_ERROR(c.Exec("DELETE FROM datasets WHERE tenant_id = ?1", tenant_id));
    out.datasets = c.Changes();
    RETURN_IF_ERROR(c.Exec("DELETE FROM versions WHERE tenant_id = ?1", tenant_id));
    out.versions = c.Changes();
    RETURN_IF_ERROR(c.Exec("DELETE FROM jobs WHERE tenant_id = ?1", tenant_id));
    out.jobs = c.Changes();
    RETURN_IF_ERROR(c.Exec("DELETE FROM tenant_deletions WHERE tenant_id = ?1", tenant_id));
    RETURN_IF_ERROR(c.Exec("DELETE FROM tenants WHERE tenant_id = ?1", tenant_id));
    return internal::AppendAudit(
        c, actor, "tenant.delete", absl::StrCat("tenant/", tenant_id),
        absl::StrCat("{\"api_keys\":", out.key_ids.size(), ",\"datasets\":", out.datasets,
                     ",\"versions\":", out.versions, ",\"jobs\":", out.jobs, ",\"blobs\":",
                     out.blob_digests.size(), "}"));
  }));
  NotifyWaiters();
  return out;
}

// ---- API keys -----------------------------------------------------------------------------------

absl::StatusOr<IssuedApiKey> Registry::CreateApiKey(Role role, const std::string& tenant_id,
                                                    const std::string& actor,
                                                    const ApiKeyOptions& options) {
  if (role == Role::kAdmin && !tenant_id.empty()) {
    return absl::InvalidArgumentError("an ADMIN key must not name a tenant_id");
  }
  const uint32_t scopes = role == Role::kAdmin ? kAllScopes : options.scopes;
  if ((scopes & kAllScopes) == 0 || (scopes & ~kAllScopes) != 0) {
    return absl::InvalidArgumentError("scopes: at least one of inference, fine-tune, read is required");
  }
  const int64_t now = NowMicros();
  if (options.expires_at_us != 0 && options.expires_at_us <= now) {
    return absl::InvalidArgumentError("expires_at: must be in the future");
  }
  if (role == Role::kTenant) RETURN_IF_ERROR(ValidateTenantId(tenant_id));
  ASSIGN_OR_RETURN(std::string key_id, RandomBase62(kKeyIdLength));
  ASSIGN_OR_RETURN(std::string random, RandomBase62(kSecretRandomLength));
  IssuedApiKey issued;
  issued.secret = absl::StrCat(Sv(kSecretPrefix), key_id, "_", random);
  issued.key = ApiKey{key_id, tenant_id, role, now, 0, scopes, options.expires_at_us, 0};
  const std::string hash = Sha256Hex(issued.secret);
  const std::string scope_names = ScopesToString(scopes);
  RETURN_IF_ERROR(pool_->Write(false, [&](Conn& c) -> absl::Status {
    if (role == Role::kTenant) RETURN_IF_ERROR(RequireTenant(c, tenant_id));
    std::optional<std::string> tenant;
    if (role == Role::kTenant) tenant = tenant_id;
    RETURN_IF_ERROR(c.Exec("INSERT INTO api_keys(key_id, tenant_id, role, secret_sha256, "
                           "created_at_us, scopes, expires_at_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                           key_id, tenant, RoleName(role), hash, issued.key.created_at_us, scope_names,
                           options.expires_at_us));
    return internal::AppendAudit(c, actor, "apikey.create", absl::StrCat("apikey/", key_id),
                       absl::StrCat("{\"role\":\"", Sv(RoleName(role)), "\",\"tenant_id\":",
                                    internal::JsonString(tenant_id), ",\"scopes\":",
                                    internal::JsonString(scope_names), ",\"expires_at_us\":",
                                    options.expires_at_us, "}"));
  }));
  return issued;
}

absl::StatusOr<Principal> Registry::AuthenticateKey(const std::string& secret) {
  const absl::Status denied = absl::UnauthenticatedError("invalid, revoked or expired API key");
  // Format: tsk_<12 base62>_<43 base62>
  if (secret.size() != kSecretPrefix.size() + kKeyIdLength + 1 + kSecretRandomLength ||
      !absl::StartsWith(secret, Sv(kSecretPrefix)) || secret[kSecretPrefix.size() + kKeyIdLength] != '_') {
    return denied;
  }
  const std::string key_id = secret.substr(kSecretPrefix.size(), kKeyIdLength);
  const std::string hash = Sha256Hex(secret);
  std::optional<Principal> principal;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    principal.reset();
    ASSIGN_OR_RETURN(Stmt st, c.Prepare("SELECT COALESCE(tenant_id, ''), role, secret_sha256, "
                                        "revoked_at_us, scopes, expires_at_us FROM api_keys "
                                        "WHERE key_id = ?1",
                                        key_id));
    ASSIGN_OR_RETURN(bool row, st.Step());
    const int64_t expires = row ? st.Int(5) : 0;
    if (row && ConstantTimeEqual(st.Text(2), hash) && st.Int(3) == 0 &&
        (expires == 0 || expires > NowMicros())) {
      Role role = ParseRole(st.Text(1));
      uint32_t scopes = role == Role::kAdmin ? kAllScopes : ParseScopes(st.Text(4)).value_or(0);
      principal = Principal{key_id, st.Text(0), role, scopes, expires};
    }
    return absl::OkStatus();
  }));
  if (!principal.has_value()) return denied;
  return *principal;
}

absl::Status Registry::RevokeApiKey(const std::string& key_id, const std::string& actor) {
  return pool_->Write(false, [&](Conn& c) -> absl::Status {
    ASSIGN_OR_RETURN(int64_t revoked,
                     c.QueryInt("SELECT revoked_at_us FROM api_keys WHERE key_id = ?1", -1, key_id));
    if (revoked < 0) return absl::NotFoundError(absl::StrCat("API key '", key_id, "' not found"));
    if (revoked > 0) {
      return absl::FailedPreconditionError(absl::StrCat("API key '", key_id, "' is already revoked"));
    }
    RETURN_IF_ERROR(c.Exec("UPDATE api_keys SET revoked_at_us = ?2 WHERE key_id = ?1", key_id,
                           NowMicros()));
    return internal::AppendAudit(c, actor, "apikey.revoke", absl::StrCat("apikey/", key_id), "");
  });
}

absl::Status Registry::TouchApiKey(const std::string& key_id) {
  const int64_t now = NowMicros();
  return pool_->Write(false, [&](Conn& c) -> absl::Status {
    return c.Exec("UPDATE api_keys SET last_used_at_us = ?2 WHERE key_id = ?1 AND last_used_at_us <= ?3",
                  key_id, now, now - kTouchIntervalUs);
  });
}

absl::Status Registry::SetApiKeyExpiry(const std::string& key_id, int64_t expires_at_us,
                                       const std::string& actor) {
  if (expires_at_us < 0) return absl::InvalidArgumentError("expires_at: must be >= 0 (0 = never)");
  return pool_->Write(false, [&](Conn& c) -> absl::Status {
    ASSIGN_OR_RETURN(int64_t revoked,
                     c.QueryInt("SELECT revoked_at_us FROM api_keys WHERE key_id = ?1", -1, key_id));
    if (revoked < 0) return absl::NotFoundError(absl::StrCat("API key '", key_id, "' not found"));
    if (revoked > 0) {
      return absl::FailedPreconditionError(absl::StrCat("API key '", key_id, "' is already revoked"));
    }
    RETURN_IF_ERROR(c.Exec("UPDATE api_keys SET expires_at_us = ?2 WHERE key_id = ?1", key_id,
                           expires_at_us));
    return internal::AppendAudit(c, actor, "apikey.expire", absl::StrCat("apikey/", key_id),
                                 absl::StrCat("{\"expires_at_us\":", expires_at_us, "}"));
  });
}

absl::StatusOr<ApiKey> Registry::GetApiKey(const std::string& key_id) {
  ApiKey k;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    ASSIGN_OR_RETURN(Stmt st, c.Prepare(absl::StrCat("SELECT ", kKeyColumns,
                                                     " FROM api_keys WHERE key_id = ?1"),
                                        key_id));
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("API key '", key_id, "' not found"));
    k = ReadKey(st);
    return absl::OkStatus();
  }));
  return k;
}

absl::StatusOr<std::vector<ApiKey>> Registry::ListApiKeys(const std::string& tenant_id) {
  std::vector<ApiKey> out;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    out.clear();
    ASSIGN_OR_RETURN(Stmt st,
                     c.Prepare(absl::StrCat("SELECT ", kKeyColumns,
                                            " FROM api_keys WHERE ?1 = '' OR tenant_id = ?1 "
                                            "ORDER BY created_at_us, key_id"),
                               tenant_id));
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      out.push_back(ReadKey(st));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<int64_t> Registry::CountActiveAdminKeys() {
  int64_t n = 0;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    ASSIGN_OR_RETURN(n, c.QueryInt("SELECT COUNT(*) FROM api_keys WHERE role = 'ADMIN' AND "
                                   "revoked_at_us = 0 AND (expires_at_us = 0 OR expires_at_us > ?1)",
                                   0, NowMicros()));
    return absl::OkStatus();
  }));
  return n;
}

// ---- Audit --------------------------------------------------------------------------------------

absl::Status Registry::AppendAudit(const std::string& actor, const std::string& action,
                                   const std::string& target, const std::string& detail,
                                   const std::string& tenant_id, const std::string& result) {
  if (action.empty()) return absl::InvalidArgumentError("audit action is empty");
  return pool_->Write(false, [&](Conn& c) {
    return internal::AppendAudit(c, actor, action, target, detail, tenant_id, result);
  });
}

absl::StatusOr<AuditPage> Registry::QueryAudit(const AuditQuery& q) {
  int page_size = q.page_size <= 0 ? 100 : std::min(q.page_size, 1000);
  int64_t before = INT64_MAX;
  if (!q.page_token.empty()) {
    if (!absl::SimpleAtoi(q.page_token, &before) || before <= 0) {
      return absl::InvalidArgumentError("page_token: malformed (pass next_page_token back unchanged)");
    }
  }
  if (q.since_us != 0 && q.until_us != 0 && q.since_us > q.until_us) {
    return absl::InvalidArgumentError("since: must not be after until");
  }
  std::string action = q.action;
  bool prefix = !action.empty() && (action.back() == '.' || action.back() == '*');
  if (!action.empty() && action.back() == '*') action.pop_back();
  AuditPage page;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    page = AuditPage();
    ASSIGN_OR_RETURN(
        Stmt st,
        c.Prepare("SELECT id, actor, action, target, detail, created_at_us, tenant_id, result FROM audit_log "
                  "WHERE id < ?1 AND (?2 = '' OR tenant_id = ?2) AND (?3 = '' OR actor = ?3) AND "
                  "(?4 = '' OR (?5 = 0 AND action = ?4) OR (?5 = 1 AND substr(action, 1, length(?4)) = ?4)) AND "
                  "(?6 = 0 OR created_at_us >= ?6) AND (?7 = 0 OR created_at_us < ?7) "
                  "ORDER BY id DESC LIMIT ?8",
                  before, q.tenant_id, q.actor, action, prefix ? int64_t{1} : int64_t{0}, q.since_us,
                  q.until_us, static_cast<int64_t>(page_size + 1)));
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      if (static_cast<int>(page.entries.size()) == page_size) {
        page.next_page_token = absl::StrCat(page.entries.back().id);
        break;
      }
      page.entries.push_back(AuditEntry{st.Int(0), st.Text(1), st.Text(2), st.Text(3), st.Text(4), st.Int(5),
                                        st.Text(6), st.Text(7)});
    }
    return absl::OkStatus();
  }));
  return page;
}

absl::StatusOr<std::vector<AuditEntry>> Registry::ListAudit(int64_t after_id, int limit) {
  std::vector<AuditEntry> out;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    out.clear();
    ASSIGN_OR_RETURN(Stmt st, c.Prepare("SELECT id, actor, action, target, detail, created_at_us, "
                                        "tenant_id, result FROM audit_log WHERE id > ?1 ORDER BY id LIMIT ?2",
                                        after_id, internal::SqlLimit(limit)));
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      out.push_back(AuditEntry{st.Int(0), st.Text(1), st.Text(2), st.Text(3), st.Text(4), st.Int(5),
                               st.Text(6), st.Text(7)});
    }
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace tessera::storage
