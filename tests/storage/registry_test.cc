// Registry unit tests on a real SQLite database in a temp dir: schema and migrations, tenants, API keys,
// datasets, expert versions, live pointers (promote / rollback semantics), change feed, audit, blob GC,
// and the job state machine table.
#include "storage/registry.h"
#include "storage/database.h"

#include <sqlite3.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <thread>

#include "gtest/gtest.h"
#include "core/util/sha256.h"
#include "tests/storage/registry_test_util.h"

namespace tessera::storage {
namespace {

using testing::RegistryTest;
using testing::StatusOf;

using testing::RawExec;
using testing::TestDb;

std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// ---- Schema ---------------------------------------------------------------------------------------

TEST_F(RegistryTest, OpenCreatesDatabaseAtLatestSchema) {
  EXPECT_EQ(reg_->SchemaVersion().value(), Registry::LatestSchemaVersion());
  EXPECT_GE(Registry::LatestSchemaVersion(), 2);
  EXPECT_OK(reg_->CheckIntegrity());
  struct stat st;
  // SQLite's file is in the data dir; a PostgreSQL registry leaves none there.
  EXPECT_EQ(::stat((dir_.path() + "/registry.db").c_str(), &st) == 0, !testing::UsePostgres());
  EXPECT_EQ(::stat((dir_.path() + "/blobs").c_str(), &st), 0);
  // Reopening is a no-op for the schema.
  Reopen();
  EXPECT_EQ(reg_->SchemaVersion().value(), Registry::LatestSchemaVersion());
}

TEST_F(RegistryTest, ForeignKeysAreEnforced) {
  // A dataset row for a tenant that does not exist is refused by the registry's connections (SQLite:
  // PRAGMA foreign_keys=ON on every connection; PostgreSQL: always).
  EXPECT_CODE(RawExec(DbTarget(), "INSERT INTO datasets(dataset_id, tenant_id, name, "
                                  "format, blob_digest, size_bytes, num_examples, num_tokens, created_at_us) "
                                  "VALUES ('ds_x','nobody','n','f','d',1,1,1,1)"),
              kFailedPrecondition);
}

TEST_F(RegistryTest, SqliteIsInWalMode) {
  TESSERA_SQLITE_ONLY("the journal mode of the database file");
  const std::string db = dir_.path() + "/registry.db";
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &raw), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "wal");
  sqlite3_finalize(st);
  sqlite3_close(raw);
}

TEST(RegistryMigrationTest, UpgradesDatabaseMadeAtMigrationOne) {
  testing::TempDir dir;
  TestDb db;
  TESSERA_REQUIRE_DB(db);
  Registry::Options at_one;
  at_one.migrate_to = 1;
  std::string job_id = "job_legacy1";
  {
    auto r = Registry::Open(dir.path(), db.Options(at_one));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ((*r)->SchemaVersion().value(), 1);
    // The tenant row as old schemas knew it (this binary's audit entry has newer columns).
    ASSERT_OK(RawExec(db.Target(dir.path()),
                      "INSERT INTO tenants(tenant_id, display_name, created_at_us) VALUES ('legacy', 'Legacy Co', 1)"));
    // A job row as migration 1 knew it (no checkpoint column, no queue_turns table).
    ASSERT_OK(RawExec(db.Target(dir.path()),
                      "INSERT INTO jobs(job_id, tenant_id, spec, training_dataset_id, state, "
                      "created_at_us) VALUES ('job_legacy1', 'legacy', '{}', 'ds_old', 'QUEUED', 1)"));
    EXPECT_FALSE(RawExec(db.Target(dir.path()), "SELECT checkpoint FROM jobs").ok());
  }
  auto r = Registry::Open(dir.path(), db.Options());
  ASSERT_TRUE(r.ok()) << r.status();
  Registry& reg = **r;
  EXPECT_EQ(reg.SchemaVersion().value(), Registry::LatestSchemaVersion());
  EXPECT_OK(reg.CheckIntegrity());
  // Old data survives and works with the new schema.
  EXPECT_EQ(reg.GetTenant("legacy").value().display_name, "Legacy Co");
  auto job = reg.GetJob("legacy", job_id);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->checkpoint, "");
  EXPECT_EQ(job->state, JobState::kQueued);
  auto claimed = reg.ClaimNextJob("w1", absl::Minutes(1));
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  ASSERT_TRUE(claimed->has_value());
  EXPECT_EQ((*claimed)->job_id, job_id);
  ASSERT_OK(reg.UpdateRunningJob(job_id, "w1", JobUpdate{std::nullopt, std::nullopt, "ckpt-1"}));
  EXPECT_EQ(reg.GetJob("", job_id).value().checkpoint, "ckpt-1");
}

TEST(RegistryMigrationTest, VersionsFromMigrationTwoGetAnEmptyBackboneDigest) {
  testing::TempDir dir;
  TestDb db;
  TESSERA_REQUIRE_DB(db);
  Registry::Options at_two;
  at_two.migrate_to = 2;
  std::string digest;
  {
    auto r = Registry::Open(dir.path(), db.Options(at_two));
    ASSERT_TRUE(r.ok()) << r.status();
    // The tenant row as old schemas knew it (this binary's audit entry has newer columns).
    ASSERT_OK(RawExec(db.Target(dir.path()),
                      "INSERT INTO tenants(tenant_id, display_name, created_at_us) VALUES ('legacy', 'Legacy Co', 1)"));
    auto d = (*r)->blobs().Put("overlay bytes");
    ASSERT_TRUE(d.ok()) << d.status();
    digest = *d;
    // A version row as migration 2 knew it (no backbone_sha256 column).
    ASSERT_OK(RawExec(db.Target(dir.path()),
                      "INSERT INTO versions(tenant_id, version, parent_version, blob_digest, size_bytes, "
                      "created_at_us) VALUES ('legacy', 1, 0, '" + digest + "', 13, 1)"));
  }
  auto r = Registry::Open(dir.path(), db.Options());
  ASSERT_TRUE(r.ok()) << r.status();
  Registry& reg = **r;
  EXPECT_EQ(reg.SchemaVersion().value(), Registry::LatestSchemaVersion());
  auto v1 = reg.GetVersion("legacy", 1);
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_EQ(v1->backbone_sha256, "");
  EXPECT_EQ(v1->method, "");  // migration 4: rows from before methods existed
  EXPECT_EQ(v1->lora_rank, 0);
  EXPECT_EQ(v1->sha256, digest);
  // New rows record the digest they are given, and it reads back (single and listed).
  NewVersion nv;
  nv.tenant_id = "legacy";
  nv.parent_version = 1;
  nv.blob_digest = digest;
  nv.backbone_sha256 = std::string(64, 'b');
  nv.method = "lora";
  nv.lora_rank = 8;
  auto v2 = reg.PublishVersion(nv, "admin");
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(reg.GetVersion("legacy", 2).value().method, "lora");
  EXPECT_EQ(reg.ListVersions("legacy").value()[0].lora_rank, 8);
  EXPECT_EQ(v2->backbone_sha256, nv.backbone_sha256);
  EXPECT_EQ(reg.GetVersion("legacy", 2).value().backbone_sha256, nv.backbone_sha256);
  auto all = reg.ListVersions("legacy");
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].backbone_sha256, nv.backbone_sha256);
  EXPECT_EQ((*all)[1].backbone_sha256, "");
  // Live flag still computed from the right column.
  ASSERT_OK(reg.Promote("legacy", 2, "admin"));
  EXPECT_TRUE(reg.GetVersion("legacy", 2).value().live);
  EXPECT_FALSE(reg.GetVersion("legacy", 1).value().live);
}

TEST(RegistryMigrationTest, KeysFromMigrationThreeKeepEveryScopeAndNeverExpire) {
  testing::TempDir dir;
  TestDb db;
  TESSERA_REQUIRE_DB(db);
  Registry::Options at_three;
  at_three.migrate_to = 3;
  std::string secret;
  {
    auto r = Registry::Open(dir.path(), db.Options(at_three));
    ASSERT_TRUE(r.ok()) << r.status();
    // The tenant row as old schemas knew it (this binary's audit entry has newer columns).
    ASSERT_OK(RawExec(db.Target(dir.path()),
                      "INSERT INTO tenants(tenant_id, display_name, created_at_us) VALUES ('legacy', 'Legacy Co', 1)"));
    // A key row as migration 3 knew it (no scopes / expiry / last use columns).
    auto k = (*r)->CreateApiKey(Role::kTenant, "legacy", "admin");
    ASSERT_FALSE(k.ok());  // this binary writes the new columns: at migration 3 they do not exist
    const std::string key_id = "abcdefghijkl";
    secret = "tsk_" + key_id + "_" + std::string(43, 'x');
    ASSERT_OK(RawExec(db.Target(dir.path()),
                      "INSERT INTO api_keys(key_id, tenant_id, role, secret_sha256, created_at_us) VALUES ('" +
                          key_id + "', 'legacy', 'TENANT', '" + Sha256Hex(secret) + "', 1)"));
  }
  auto r = Registry::Open(dir.path(), db.Options());
  ASSERT_TRUE(r.ok()) << r.status();
  auto p = (*r)->AuthenticateKey(secret);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->scopes, kAllScopes);
  EXPECT_EQ(p->expires_at_us, 0);
  auto k = (*r)->GetApiKey("abcdefghijkl");
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->scopes, kAllScopes);
  EXPECT_EQ(k->last_used_at_us, 0);
}

TEST(RegistryMigrationTest, AuditEntriesBeforeMigrationSevenGetTheirTenant) {
  testing::TempDir dir;
  TestDb db;
  TESSERA_REQUIRE_DB(db);
  Registry::Options at_six;
  at_six.migrate_to = 6;
  {
    auto r = Registry::Open(dir.path(), db.Options(at_six));
    ASSERT_TRUE(r.ok()) << r.status();
    // Entries as migration 6 wrote them (no tenant_id / result columns).
    ASSERT_OK(RawExec(db.Target(dir.path()),
                      "INSERT INTO tenants(tenant_id, display_name, created_at_us) VALUES ('legacy', 'L', 1);"
                      "INSERT INTO api_keys(key_id, tenant_id, role, secret_sha256, created_at_us) VALUES "
                      "('abcdefghijkl', 'legacy', 'TENANT', 'x', 1);"
                      "INSERT INTO audit_log(actor, action, target, detail, created_at_us) VALUES "
                      "('admin', 'tenant.create', 'tenant/legacy', '', 1), "
                      "('admin', 'apikey.create', 'apikey/abcdefghijkl', '', 2), "
                      "('system', 'blob.delete', 'blob/00', '', 3)"));
  }
  auto r = Registry::Open(dir.path(), db.Options());
  ASSERT_TRUE(r.ok()) << r.status();
  auto audit = (*r)->ListAudit(0);
  ASSERT_TRUE(audit.ok()) << audit.status();
  ASSERT_EQ(audit->size(), 3u);
  EXPECT_EQ((*audit)[0].tenant_id, "legacy");
  EXPECT_EQ((*audit)[1].tenant_id, "legacy");
  EXPECT_EQ((*audit)[2].tenant_id, "");
  for (const AuditEntry& e : *audit) EXPECT_EQ(e.result, "OK");
}

TEST(RegistryMigrationTest, VersionsFromMigrationSevenHaveNoGateRecordAndNewOnesKeepIt) {
  testing::TempDir dir;
  TestDb db;
  TESSERA_REQUIRE_DB(db);
  Registry::Options at_seven;
  at_seven.migrate_to = 7;
  std::string digest;
  {
    auto r = Registry::Open(dir.path(), db.Options(at_seven));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_OK((*r)->CreateTenant("legacy", "Legacy Co", "admin"));
    auto d = (*r)->blobs().Put("overlay bytes");
    ASSERT_TRUE(d.ok()) << d.status();
    digest = *d;
    ASSERT_OK(RawExec(db.Target(dir.path()),
                      "INSERT INTO versions(tenant_id, version, parent_version, blob_digest, size_bytes, "
                      "created_at_us) VALUES ('legacy', 1, 0, '" + digest + "', 13, 1)"));
  }
  auto r = Registry::Open(dir.path(), db.Options());
  ASSERT_TRUE(r.ok()) << r.status();
  Registry& reg = **r;
  auto v1 = reg.GetVersion("legacy", 1);
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_FALSE(v1->general_loss.has_value());
  EXPECT_FALSE(v1->base_general_loss.has_value());
  EXPECT_EQ(v1->promotion_decision, "");
  EXPECT_EQ(v1->promotion_reason, "");
  NewVersion nv;
  nv.tenant_id = "legacy";
  nv.parent_version = 1;
  nv.blob_digest = digest;
  nv.method = "lora";
  nv.lora_rank = 4;
  nv.general_loss = 0.8125;
  nv.base_general_loss = 0.75;
  nv.promotion_decision = "keep";
  nv.promotion_reason = "not promoted: general loss up 8.3%";
  ASSERT_TRUE(reg.PublishVersion(nv, "admin").ok());
  for (const ExpertVersion& v : {reg.GetVersion("legacy", 2).value(), reg.ListVersions("legacy").value()[0]}) {
    EXPECT_EQ(v.version, 2);
    EXPECT_EQ(v.method, "lora");
    EXPECT_EQ(v.lora_rank, 4);
    EXPECT_EQ(v.general_loss, 0.8125);
    EXPECT_EQ(v.base_general_loss, 0.75);
    EXPECT_EQ(v.promotion_decision, "keep");
    EXPECT_EQ(v.promotion_reason, nv.promotion_reason);
  }
  ASSERT_OK(reg.Promote("legacy", 2, "admin"));
  EXPECT_TRUE(reg.GetVersion("legacy", 2).value().live);
}

TEST(RegistryMigrationTest, DatasetsFromMigrationEightHaveUnknownLossTokens) {
  testing::TempDir dir;
  TestDb db;
  TESSERA_REQUIRE_DB(db);
  Registry::Options at_eight;
  at_eight.migrate_to = 8;
  std::string digest;
  {
    auto r = Registry::Open(dir.path(), db.Options(at_eight));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_OK((*r)->CreateTenant("legacy", "Legacy Co", "admin"));
    auto d = (*r)->blobs().Put("{\"text\": \"x\"}\n");
    ASSERT_TRUE(d.ok()) << d.status();
    digest = *d;
    // A dataset row as migration 8 knew it (no num_loss_tokens column).
    ASSERT_OK(RawExec(db.Target(dir.path()),
                      "INSERT INTO datasets(dataset_id, tenant_id, name, format, blob_digest, size_bytes, "
                      "num_examples, num_tokens, created_at_us) VALUES ('ds_old', 'legacy', 'n', 'jsonl', '" +
                          digest + "', 14, 1, 3, 1)"));
  }
  auto r = Registry::Open(dir.path(), db.Options());
  ASSERT_TRUE(r.ok()) << r.status();
  auto old = (*r)->GetDataset("legacy", "ds_old");
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->num_tokens, 3);
  EXPECT_EQ(old->num_loss_tokens, 0);
  auto fresh = (*r)->CreateDataset(NewDataset{"legacy", "new", "jsonl", digest, 1, 3, 2}, "admin");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ((*r)->GetDataset("legacy", fresh->dataset_id).value().num_loss_tokens, 2);
  EXPECT_CODE((*r)->CreateDataset(NewDataset{"legacy", "bad", "jsonl", digest, 1, 3, -1}, "admin"),
              kInvalidArgument);
}

TEST(RegistryMigrationTest, JobsFromMigrationNineHaveNoSuffixAndNewOnesKeepIt) {
  testing::TempDir dir;
  TestDb db;
  TESSERA_REQUIRE_DB(db);
  Registry::Options at_nine;
  at_nine.migrate_to = 9;
  std::string dataset_id;
  {
    auto r = Registry::Open(dir.path(), db.Options(at_nine));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_OK((*r)->CreateTenant("legacy", "Legacy Co", "admin"));
    auto d = (*r)->blobs().Put("{\"text\": \"x\"}\n");
    ASSERT_TRUE(d.ok()) << d.status();
    auto ds = (*r)->CreateDataset(NewDataset{"legacy", "n", "jsonl", *d, 1, 3, 2}, "admin");
    ASSERT_TRUE(ds.ok()) << ds.status();
    dataset_id = ds->dataset_id;
    // A job row as migration 9 knew it (no suffix column).
    ASSERT_OK(RawExec(db.Target(dir.path()),
                      "INSERT INTO jobs(job_id, tenant_id, spec, training_dataset_id, validation_dataset_id, state, "
                      "created_at_us, max_steps) VALUES ('job_old', 'legacy', '{}', '" + dataset_id +
                          "', '', 'QUEUED', 1, 4)"));
  }
  auto r = Registry::Open(dir.path(), db.Options());
  ASSERT_TRUE(r.ok()) << r.status();
  auto old = (*r)->GetJob("legacy", "job_old");
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->suffix, "");
  NewJob nj;
  nj.tenant_id = "legacy";
  nj.spec = "{}";
  nj.training_dataset_id = dataset_id;
  nj.max_steps = 4;
  nj.suffix = "support-v2";
  auto fresh = (*r)->CreateJob(nj, "admin");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->suffix, "support-v2");
  EXPECT_EQ((*r)->GetJob("legacy", fresh->job_id).value().suffix, "support-v2");
  EXPECT_EQ((*r)->ListJobs("legacy", 10, "").value().jobs[0].suffix, "support-v2");
}

TEST(RegistryMigrationTest, RefusesNewerSchemaAndBadTarget) {
  testing::TempDir dir;
  TestDb db;
  TESSERA_REQUIRE_DB(db);
  { ASSERT_OK(Registry::Open(dir.path(), db.Options())); }
  ASSERT_OK(RawExec(db.Target(dir.path()),
                    "INSERT INTO schema_migrations(version, applied_at_us) VALUES (999, 1)"));
  EXPECT_CODE(Registry::Open(dir.path(), db.Options()), kFailedPrecondition);
  testing::TempDir dir2;
  Registry::Options bad;
  bad.migrate_to = 1000;
  EXPECT_CODE(Registry::Open(dir2.path(), bad), kInvalidArgument);
  EXPECT_CODE(Registry::Open(""), kInvalidArgument);
  Registry::Options unknown_engine;
  unknown_engine.database = "mysql://root@localhost/x";
  EXPECT_CODE(Registry::Open(dir2.path(), unknown_engine), kInvalidArgument);
  // Nothing listens on port 1: UNAVAILABLE, saying it could not connect.
  Registry::Options unreachable;
  unreachable.database = "postgres://tessera@127.0.0.1:1/registry?connect_timeout=2";
  auto r = Registry::Open(dir2.path(), unreachable);
  EXPECT_CODE(r, kUnavailable);
  EXPECT_NE(r.status().message().find("cannot connect"), std::string::npos) << r.status();
}

// ---- Tenants --------------------------------------------------------------------------------------

TEST(TenantIdTest, SlugRules) {
  for (const char* good : {"ab", "acme", "a-1", "team-42-x", "z9"}) {
    EXPECT_TRUE(ValidateTenantId(good).ok()) << good;
  }
  const std::string max_len = "a" + std::string(62, 'b');
  EXPECT_TRUE(ValidateTenantId(max_len).ok());
  for (const std::string& bad : {std::string(""), std::string("a"), std::string("1abc"),
                                std::string("-ab"), std::string("Acme"), std::string("ac_me"),
                                std::string("ac me"), std::string("acmé"), max_len + "c"}) {
    EXPECT_EQ(ValidateTenantId(bad).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST_F(RegistryTest, TenantsCreateGetList) {
  auto t = reg_->CreateTenant("acme", "Acme Corp", "admin-key");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->tenant_id, "acme");
  EXPECT_EQ(t->display_name, "Acme Corp");
  EXPECT_GT(t->created_at_us, 0);
  EXPECT_CODE(reg_->CreateTenant("acme", "again", "admin-key"), kAlreadyExists);
  EXPECT_CODE(reg_->CreateTenant("Bad_Id", "x", "admin-key"), kInvalidArgument);
  MakeTenant("beta");
  auto got = reg_->GetTenant("acme");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->display_name, "Acme Corp");
  EXPECT_EQ(got->created_at_us, t->created_at_us);
  auto missing = reg_->GetTenant("nope");
  EXPECT_CODE(missing, kNotFound);
  EXPECT_NE(missing.status().message().find("nope"), std::string::npos);
  auto list = reg_->ListTenants();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].tenant_id, "acme");
  EXPECT_EQ((*list)[1].tenant_id, "beta");
  EXPECT_EQ(reg_->GetLive("acme").value(), 0);
  // Empty display name defaults to the id.
  EXPECT_EQ(reg_->CreateTenant("gamma", "", "admin-key").value().display_name, "gamma");
}

// ---- API keys -------------------------------------------------------------------------------------

TEST_F(RegistryTest, ApiKeysAuthenticateAndRevoke) {
  MakeTenant("acme");
  auto k = reg_->CreateApiKey(Role::kTenant, "acme", "admin-key");
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(k->secret.rfind("tsk_" + k->key.key_id + "_", 0), 0u);
  EXPECT_EQ(k->key.tenant_id, "acme");
  auto p = reg_->AuthenticateKey(k->secret);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->key_id, k->key.key_id);
  EXPECT_EQ(p->tenant_id, "acme");
  EXPECT_EQ(p->role, Role::kTenant);

  auto admin = reg_->CreateApiKey(Role::kAdmin, "", "system");
  ASSERT_TRUE(admin.ok()) << admin.status();
  auto ap = reg_->AuthenticateKey(admin->secret);
  ASSERT_TRUE(ap.ok());
  EXPECT_EQ(ap->role, Role::kAdmin);
  EXPECT_EQ(ap->tenant_id, "");
  EXPECT_EQ(reg_->CountActiveAdminKeys().value(), 1);

  // Keys are distinct and random.
  auto k2 = reg_->CreateApiKey(Role::kTenant, "acme", "admin-key");
  ASSERT_TRUE(k2.ok());
  EXPECT_NE(k2->secret, k->secret);
  EXPECT_NE(k2->key.key_id, k->key.key_id);

  // Tampered / malformed secrets.
  std::string tampered = k->secret;
  tampered.back() = tampered.back() == 'a' ? 'b' : 'a';
  for (const std::string& bad : {tampered, std::string(""), std::string("tsk_"),
                                 std::string("Bearer ") + k->secret, k->secret + "x"}) {
    EXPECT_CODE(reg_->AuthenticateKey(bad), kUnauthenticated);
  }

  ASSERT_OK(reg_->RevokeApiKey(k->key.key_id, "admin-key"));
  EXPECT_CODE(reg_->AuthenticateKey(k->secret), kUnauthenticated);
  EXPECT_CODE(reg_->RevokeApiKey(k->key.key_id, "admin-key"), kFailedPrecondition);
  EXPECT_CODE(reg_->RevokeApiKey("nosuchkey000", "admin-key"), kNotFound);
  EXPECT_GT(reg_->GetApiKey(k->key.key_id).value().revoked_at_us, 0);
  EXPECT_TRUE(reg_->AuthenticateKey(k2->secret).ok());  // other keys unaffected
  ASSERT_OK(reg_->RevokeApiKey(admin->key.key_id, "system"));
  EXPECT_EQ(reg_->CountActiveAdminKeys().value(), 0);

  EXPECT_EQ(reg_->ListApiKeys("acme").value().size(), 2u);
  EXPECT_EQ(reg_->ListApiKeys("").value().size(), 3u);
  EXPECT_CODE(reg_->GetApiKey("nosuchkey000"), kNotFound);
}

TEST_F(RegistryTest, ApiKeyScopesExpiryAndLastUse) {
  MakeTenant("acme");
  ApiKeyOptions infer;
  infer.scopes = kScopeInference;
  auto k = reg_->CreateApiKey(Role::kTenant, "acme", "admin-key", infer);
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(k->key.scopes, kScopeInference);
  EXPECT_EQ(reg_->AuthenticateKey(k->secret).value().scopes, kScopeInference);
  EXPECT_EQ(reg_->GetApiKey(k->key.key_id).value().scopes, kScopeInference);
  // Default: every scope, never expires.
  auto all = reg_->CreateApiKey(Role::kTenant, "acme", "admin-key");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(reg_->AuthenticateKey(all->secret).value().scopes, kAllScopes);
  EXPECT_EQ(reg_->GetApiKey(all->key.key_id).value().expires_at_us, 0);

  // Expiry: valid before, UNAUTHENTICATED from the instant on. (2 s ahead: creating the key and the
  // first check must happen before it even on a loaded machine; a check that returns after it proves
  // nothing about "before" and is skipped.)
  ApiKeyOptions soon;
  soon.expires_at_us = NowMicros() + 2000000;
  auto e = reg_->CreateApiKey(Role::kTenant, "acme", "admin-key", soon);
  ASSERT_TRUE(e.ok()) << e.status();
  auto ep = reg_->AuthenticateKey(e->secret);
  if (NowMicros() < soon.expires_at_us) {
    ASSERT_TRUE(ep.ok()) << ep.status();
    EXPECT_EQ(ep->expires_at_us, soon.expires_at_us);
  }
  while (NowMicros() <= soon.expires_at_us) absl::SleepFor(absl::Milliseconds(20));
  EXPECT_CODE(reg_->AuthenticateKey(e->secret), kUnauthenticated);
  // Rotation's grace: an existing key's expiry is set (audited), a revoked one refused.
  ASSERT_OK(reg_->SetApiKeyExpiry(all->key.key_id, NowMicros() - 1, "admin-key"));
  EXPECT_CODE(reg_->AuthenticateKey(all->secret), kUnauthenticated);
  ASSERT_OK(reg_->RevokeApiKey(k->key.key_id, "admin-key"));
  EXPECT_CODE(reg_->SetApiKeyExpiry(k->key.key_id, 0, "admin-key"), kFailedPrecondition);
  EXPECT_CODE(reg_->SetApiKeyExpiry("nosuchkey000", 0, "admin-key"), kNotFound);
  auto audit = reg_->ListAudit(0);
  ASSERT_TRUE(audit.ok());
  int expiries = 0;
  for (const AuditEntry& e : *audit) expiries += e.action == "apikey.expire" && e.target == "apikey/" + all->key.key_id;
  EXPECT_EQ(expiries, 1);

  // Argument errors: no scope, an unknown bit, an expiry in the past.
  ApiKeyOptions none;
  none.scopes = 0;
  EXPECT_CODE(reg_->CreateApiKey(Role::kTenant, "acme", "x", none), kInvalidArgument);
  none.scopes = 8;
  EXPECT_CODE(reg_->CreateApiKey(Role::kTenant, "acme", "x", none), kInvalidArgument);
  ApiKeyOptions past;
  past.expires_at_us = NowMicros() - 1;
  EXPECT_CODE(reg_->CreateApiKey(Role::kTenant, "acme", "x", past), kInvalidArgument);
  // ADMIN keys always hold every scope.
  auto admin = reg_->CreateApiKey(Role::kAdmin, "", "system", infer);
  ASSERT_TRUE(admin.ok());
  EXPECT_EQ(reg_->AuthenticateKey(admin->secret).value().scopes, kAllScopes);

  // Last use: written once, then not again within the minute.
  auto fresh = reg_->CreateApiKey(Role::kTenant, "acme", "admin-key");
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(reg_->GetApiKey(fresh->key.key_id).value().last_used_at_us, 0);
  const int64_t before = NowMicros();
  ASSERT_OK(reg_->TouchApiKey(fresh->key.key_id));
  const int64_t first = reg_->GetApiKey(fresh->key.key_id).value().last_used_at_us;
  EXPECT_GE(first, before);
  absl::SleepFor(absl::Milliseconds(5));
  ASSERT_OK(reg_->TouchApiKey(fresh->key.key_id));
  EXPECT_EQ(reg_->GetApiKey(fresh->key.key_id).value().last_used_at_us, first);
}

TEST(ScopesTest, ParseAndFormat) {
  EXPECT_EQ(ParseScopes("inference").value(), kScopeInference);
  EXPECT_EQ(ParseScopes(" read , fine-tune ").value(), kScopeRead | kScopeFineTune);
  EXPECT_EQ(ParseScopes("inference,fine-tune,read").value(), kAllScopes);
  EXPECT_EQ(ScopesToString(kAllScopes), "inference,fine-tune,read");
  EXPECT_EQ(ScopesToString(kScopeRead | kScopeInference), "inference,read");
  absl::Status bad = ParseScopes("inference,admin").status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("'admin'"), std::string::npos) << bad;
  EXPECT_EQ(ParseScopes("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseScopes(" , ").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RegistryTest, ApiKeyArgumentErrors) {
  MakeTenant("acme");
  EXPECT_CODE(reg_->CreateApiKey(Role::kAdmin, "acme", "x"), kInvalidArgument);
  EXPECT_CODE(reg_->CreateApiKey(Role::kTenant, "", "x"), kInvalidArgument);
  EXPECT_CODE(reg_->CreateApiKey(Role::kTenant, "ghost", "x"), kNotFound);
}

TEST_F(RegistryTest, SecretIsNeverStored) {
  MakeTenant("acme");
  auto k = reg_->CreateApiKey(Role::kTenant, "acme", "admin-key");
  ASSERT_TRUE(k.ok());
  const std::string random_part = k->secret.substr(k->secret.rfind('_') + 1);
  const std::string hash = Sha256Hex(k->secret);
  // What is stored is the hash, on both engines.
  auto db = Database::Open(DbTarget(), Database::Options());
  ASSERT_TRUE(db.ok()) << db.status();
  std::string stored;
  ASSERT_OK((*db)->Read([&](Conn& c) -> absl::Status {
    auto st = c.Prepare("SELECT secret_sha256 FROM api_keys WHERE key_id = ?1", k->key.key_id);
    if (!st.ok()) return st.status();
    if (st->Step().value_or(false)) stored = st->Text(0);
    return absl::OkStatus();
  }));
  EXPECT_EQ(stored, hash);
  if (testing::UsePostgres()) return;  // the server's files belong to it; SQLite's are ours to scan
  for (const char* f : {"/registry.db", "/registry.db-wal"}) {
    const std::string bytes = ReadFileBytes(dir_.path() + f);
    EXPECT_EQ(bytes.find(random_part), std::string::npos) << f;
  }
  const std::string all =
      ReadFileBytes(dir_.path() + "/registry.db") + ReadFileBytes(dir_.path() + "/registry.db-wal");
  EXPECT_NE(all.find(hash), std::string::npos);
}

// ---- Datasets -------------------------------------------------------------------------------------

TEST_F(RegistryTest, DatasetsLifecycleAndScoping) {
  MakeTenant("acme");
  MakeTenant("beta");
  const std::string bytes = "{\"text\": \"hello\"}\n{\"text\": \"world\"}\n";
  const std::string digest = PutBlob(bytes);
  NewDataset in{"acme", "greetings", "jsonl", digest, 2, 7, 5};
  auto d = reg_->CreateDataset(in, "key-a");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->dataset_id.rfind("ds_", 0), 0u);
  EXPECT_EQ(d->sha256, digest);
  EXPECT_EQ(d->size_bytes, static_cast<int64_t>(bytes.size()));
  EXPECT_EQ(d->num_examples, 2);
  EXPECT_EQ(d->num_tokens, 7);
  EXPECT_EQ(d->num_loss_tokens, 5);

  auto got = reg_->GetDataset("acme", d->dataset_id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->num_loss_tokens, 5);
  EXPECT_EQ(got->name, "greetings");
  EXPECT_EQ(got->format, "jsonl");
  // Another tenant cannot see it, and the error does not reveal the owner.
  auto leak = reg_->GetDataset("beta", d->dataset_id);
  EXPECT_CODE(leak, kNotFound);
  EXPECT_EQ(leak.status().message().find("acme"), std::string::npos);
  EXPECT_CODE(reg_->DeleteDataset("beta", d->dataset_id, "key-b"), kNotFound);
  EXPECT_TRUE(reg_->GetDataset("", d->dataset_id).ok());  // admin scope

  const std::string second = MakeDataset("acme", "second");
  auto list = reg_->ListDatasets("acme");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].dataset_id, second);  // newest first
  EXPECT_TRUE(reg_->ListDatasets("beta").value().empty());
  EXPECT_CODE(reg_->ListDatasets("ghost"), kNotFound);

  ASSERT_OK(reg_->DeleteDataset("acme", d->dataset_id, "key-a"));
  EXPECT_CODE(reg_->GetDataset("acme", d->dataset_id), kNotFound);
  EXPECT_CODE(reg_->DeleteDataset("acme", d->dataset_id, "key-a"), kNotFound);
}

TEST_F(RegistryTest, DatasetErrors) {
  MakeTenant("acme");
  const std::string absent = Sha256Hex("not stored");
  EXPECT_CODE(reg_->CreateDataset(NewDataset{"acme", "d", "jsonl", absent, 1, 1}, "k"),
              kFailedPrecondition);
  const std::string digest = PutBlob("x");
  EXPECT_CODE(reg_->CreateDataset(NewDataset{"ghost", "d", "jsonl", digest, 1, 1}, "k"), kNotFound);
  EXPECT_CODE(reg_->CreateDataset(NewDataset{"acme", "", "jsonl", digest, 1, 1}, "k"),
              kInvalidArgument);
  EXPECT_CODE(reg_->CreateDataset(NewDataset{"acme", "d", "jsonl", "xyz", 1, 1}, "k"),
              kInvalidArgument);
  EXPECT_CODE(reg_->CreateDataset(NewDataset{"acme", "d", "jsonl", digest, -1, 1}, "k"),
              kInvalidArgument);
}

TEST_F(RegistryTest, DatasetDeleteRefusedWhileJobQueuedOrRunning) {
  MakeTenant("acme");
  const std::string ds = MakeDataset("acme");
  const std::string job = MakeJob("acme", ds);
  auto refused = reg_->DeleteDataset("acme", ds, "k");
  EXPECT_CODE(refused, kFailedPrecondition);
  EXPECT_NE(refused.message().find(job), std::string::npos);
  ASSERT_TRUE(reg_->ClaimNextJob("w", absl::Minutes(1)).value().has_value());
  EXPECT_CODE(reg_->DeleteDataset("acme", ds, "k"), kFailedPrecondition);  // RUNNING
  ASSERT_OK(reg_->FinishJob(job, "w", JobResult{JobState::kSucceeded, "", std::nullopt, false}));
  EXPECT_OK(reg_->DeleteDataset("acme", ds, "k"));
}

// ---- Versions ---------------------------------------------------------------------------------------

TEST_F(RegistryTest, PublishAssignsDensePerTenantNumbers) {
  MakeTenant("acme");
  MakeTenant("beta");
  EXPECT_EQ(Publish("acme"), 1);
  EXPECT_EQ(Publish("acme", 1), 2);
  EXPECT_EQ(Publish("beta"), 1);
  EXPECT_EQ(Publish("acme", 2), 3);
  auto v = reg_->GetVersion("acme", 2);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->tenant_id, "acme");
  EXPECT_EQ(v->parent_version, 1);
  EXPECT_EQ(v->slots_json, "[[0,1],[2,3]]");
  EXPECT_DOUBLE_EQ(v->val_loss.value(), 1.5);
  EXPECT_DOUBLE_EQ(v->base_val_loss.value(), 2.0);
  EXPECT_TRUE(reg_->blobs().Verify(v->sha256).ok());
  EXPECT_EQ(v->size_bytes, reg_->blobs().Size(v->sha256).value());
  EXPECT_FALSE(v->live);
  auto list = reg_->ListVersions("acme");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[0].version, 3);
  EXPECT_EQ((*list)[2].version, 1);
  EXPECT_EQ(reg_->ListVersions("beta").value().size(), 1u);
}

TEST_F(RegistryTest, PublishErrors) {
  MakeTenant("acme");
  MakeTenant("beta");
  NewVersion v;
  v.tenant_id = "acme";
  v.blob_digest = Sha256Hex("not in the store");
  auto r = reg_->PublishVersion(v, "k");
  EXPECT_CODE(r, kFailedPrecondition);
  v.blob_digest = PutBlob("weights");
  v.parent_version = 5;
  EXPECT_CODE(reg_->PublishVersion(v, "k"), kNotFound);
  v.parent_version = -1;
  EXPECT_CODE(reg_->PublishVersion(v, "k"), kInvalidArgument);
  v.parent_version = 0;
  v.job_id = "job_doesnotexist";
  EXPECT_CODE(reg_->PublishVersion(v, "k"), kNotFound);
  // A job of another tenant is as good as absent.
  const std::string beta_job = MakeJob("beta", MakeDataset("beta"));
  v.job_id = beta_job;
  EXPECT_CODE(reg_->PublishVersion(v, "k"), kNotFound);
  v.job_id = "";
  v.tenant_id = "ghost";
  EXPECT_CODE(reg_->PublishVersion(v, "k"), kNotFound);
  v.tenant_id = "acme";
  v.blob_digest = "zz";
  EXPECT_CODE(reg_->PublishVersion(v, "k"), kInvalidArgument);
  // Nothing half-made: acme has no versions.
  EXPECT_TRUE(reg_->ListVersions("acme").value().empty());
  // The job link works for the tenant's own job.
  const std::string acme_job = MakeJob("acme", MakeDataset("acme"));
  EXPECT_EQ(Publish("acme", 0, acme_job), 1);
  EXPECT_EQ(reg_->GetVersion("acme", 1).value().job_id, acme_job);
}

TEST_F(RegistryTest, VersionScopingAndNotFound) {
  MakeTenant("acme");
  MakeTenant("beta");
  Publish("acme");
  auto leak = reg_->GetVersion("beta", 1);
  EXPECT_CODE(leak, kNotFound);
  EXPECT_EQ(leak.status().message().find("acme"), std::string::npos);
  EXPECT_CODE(reg_->GetVersion("acme", 2), kNotFound);
  EXPECT_CODE(reg_->GetVersion("acme", 0), kInvalidArgument);
  EXPECT_CODE(reg_->ListVersions("ghost"), kNotFound);
  EXPECT_CODE(reg_->Promote("beta", 1, "k"), kNotFound);
}

TEST_F(RegistryTest, VersionsAreImmutableInTheDatabase) {
  MakeTenant("acme");
  Publish("acme");
  absl::Status update = RawExec(DbTarget(), "UPDATE versions SET val_loss = 0");
  EXPECT_CODE(update, kFailedPrecondition);
  EXPECT_NE(update.message().find("immutable"), std::string::npos) << update;
  EXPECT_CODE(RawExec(DbTarget(), "DELETE FROM versions"), kFailedPrecondition);
  EXPECT_TRUE(reg_->GetVersion("acme", 1).ok());
}

TEST_F(RegistryTest, AuditQueryFiltersAndPaginatesNewestFirst) {
  MakeTenant("acme");
  MakeTenant("beta");
  auto key = reg_->CreateApiKey(Role::kTenant, "acme", "admin-key");
  ASSERT_TRUE(key.ok());
  const std::string ds = MakeDataset("acme");
  const std::string job = MakeJob("acme", ds);
  ASSERT_OK(reg_->CancelJob("acme", job, key->key.key_id));
  const int64_t mid = NowMicros();
  absl::SleepFor(absl::Milliseconds(2));
  ASSERT_OK(reg_->DeleteDataset("acme", ds, key->key.key_id));
  ASSERT_OK(reg_->AppendAudit(key->key.key_id, "dataset.create", "tenant/beta", "{}", "beta", "PERMISSION_DENIED"));

  auto all = reg_->QueryAudit(AuditQuery());
  ASSERT_TRUE(all.ok()) << all.status();
  const std::vector<AuditEntry>& e = all->entries;
  ASSERT_EQ(e.size(), 8u);  // 2 tenants, key, dataset, job, cancel, dataset delete, the refusal
  for (size_t i = 1; i < e.size(); ++i) EXPECT_GT(e[i - 1].id, e[i].id);
  // Tenants resolved from every kind of target, rows deleted meanwhile included.
  std::map<std::string, std::string> tenant_of;
  for (const AuditEntry& x : e) tenant_of[x.action + " " + x.result] = x.tenant_id;
  EXPECT_EQ(tenant_of["apikey.create OK"], "acme");
  EXPECT_EQ(tenant_of["dataset.create OK"], "acme");
  EXPECT_EQ(tenant_of["job.create OK"], "acme");
  EXPECT_EQ(tenant_of["job.cancel OK"], "acme");
  EXPECT_EQ(tenant_of["dataset.delete OK"], "acme");
  EXPECT_EQ(tenant_of["dataset.create PERMISSION_DENIED"], "beta");

  AuditQuery q;
  q.tenant_id = "beta";
  EXPECT_EQ(reg_->QueryAudit(q).value().entries.size(), 2u);  // beta's creation and the refusal
  q = AuditQuery();
  q.actor = key->key.key_id;
  EXPECT_EQ(reg_->QueryAudit(q).value().entries.size(), 3u);
  q = AuditQuery();
  q.action = "dataset.";
  EXPECT_EQ(reg_->QueryAudit(q).value().entries.size(), 3u);
  q.action = "dataset*";
  EXPECT_EQ(reg_->QueryAudit(q).value().entries.size(), 3u);
  q.action = "dataset.delete";
  EXPECT_EQ(reg_->QueryAudit(q).value().entries.size(), 1u);
  q = AuditQuery();
  q.since_us = mid;
  EXPECT_EQ(reg_->QueryAudit(q).value().entries.size(), 2u);
  q = AuditQuery();
  q.until_us = mid;
  EXPECT_EQ(reg_->QueryAudit(q).value().entries.size(), 6u);
  q.since_us = mid + 1;
  EXPECT_CODE(reg_->QueryAudit(q), kInvalidArgument);

  // Pages of 3: everything once, in order.
  std::vector<int64_t> ids;
  q = AuditQuery();
  q.page_size = 3;
  do {
    auto page = reg_->QueryAudit(q);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_LE(page->entries.size(), 3u);
    for (const AuditEntry& x : page->entries) ids.push_back(x.id);
    q.page_token = page->next_page_token;
  } while (!q.page_token.empty());
  ASSERT_EQ(ids.size(), e.size());
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], e[i].id);
  q.page_token = "x1";
  EXPECT_CODE(reg_->QueryAudit(q), kInvalidArgument);
}

TEST_F(RegistryTest, DeleteTenantRemovesItsRowsOnlyAndKeepsSharedBlobs) {
  MakeTenant("acme");
  MakeTenant("beta");
  auto key = reg_->CreateApiKey(Role::kTenant, "acme", "admin-key");
  ASSERT_TRUE(key.ok());
  auto beta_key = reg_->CreateApiKey(Role::kTenant, "beta", "admin-key");
  ASSERT_TRUE(beta_key.ok());
  const std::string ds = MakeDataset("acme");
  const std::string own_version_blob = PutBlob("acme only");
  const std::string shared_blob = PutBlob("the same bytes");
  for (const auto& [tenant, blob] : std::vector<std::pair<std::string, std::string>>{
           {"acme", own_version_blob}, {"acme", shared_blob}, {"beta", shared_blob}}) {
    NewVersion v;
    v.tenant_id = tenant;
    v.blob_digest = blob;
    ASSERT_OK(reg_->PublishVersion(v, "admin-key"));
  }
  ASSERT_OK(reg_->Promote("acme", 2, "admin-key"));
  ASSERT_OK(reg_->Promote("beta", 1, "admin-key"));
  const std::string job = MakeJob("acme", ds);
  ASSERT_OK(reg_->AppendJobEvent(job, "progress", "{}"));
  const int64_t seq_before = reg_->ChangeSequence().value();

  // An unfinished job blocks it.
  absl::Status blocked = reg_->DeleteTenant("acme", "admin-key").status();
  EXPECT_EQ(blocked.code(), absl::StatusCode::kFailedPrecondition) << blocked;
  EXPECT_NE(blocked.message().find("force"), std::string::npos) << blocked;
  ASSERT_OK(reg_->CancelJob("acme", job, "admin-key"));
  const absl::Time started = absl::Now();
  auto gone = reg_->DeleteTenant("acme", "admin-key");
  ASSERT_TRUE(gone.ok()) << gone.status();
  EXPECT_EQ(gone->key_ids, std::vector<std::string>{key->key.key_id});
  EXPECT_EQ(gone->datasets, 1);
  EXPECT_EQ(gone->versions, 2);
  EXPECT_EQ(gone->jobs, 1);
  EXPECT_EQ(gone->blob_digests.size(), 3u);

  EXPECT_CODE(reg_->GetTenant("acme"), kNotFound);
  EXPECT_CODE(reg_->AuthenticateKey(key->secret), kUnauthenticated);
  EXPECT_CODE(reg_->GetJob("", job), kNotFound);
  EXPECT_CODE(reg_->GetLive("acme"), kNotFound);
  EXPECT_CODE(reg_->ListLiveHistory("acme"), kNotFound);
  EXPECT_CODE(reg_->DeleteTenant("acme", "admin-key"), kNotFound);
  // The change sequence never goes back, though acme's change rows went.
  EXPECT_GE(reg_->ChangeSequence().value(), seq_before);
  // beta untouched.
  EXPECT_TRUE(reg_->AuthenticateKey(beta_key->secret).ok());
  EXPECT_EQ(reg_->GetLive("beta").value(), 1);
  EXPECT_EQ(reg_->GetVersion("beta", 1).value().sha256, shared_blob);
  // Versions stay immutable outside DeleteTenant's transaction.
  absl::Status del = RawExec(DbTarget(), "DELETE FROM versions");
  EXPECT_CODE(del, kFailedPrecondition);
  EXPECT_NE(del.message().find("immutable"), std::string::npos) << del;
  EXPECT_TRUE(reg_->GetVersion("beta", 1).ok());
  // Audited, and the audit log itself is kept.
  auto audit = reg_->ListAudit(0).value();
  EXPECT_EQ(audit.back().action, "tenant.delete");
  EXPECT_EQ(audit.back().target, "tenant/acme");
  EXPECT_EQ(audit.front().action, "tenant.create");

  // Blobs: only what nothing else names goes; the shared one stays for beta.
  auto stats = reg_->DeleteBlobsIfUnreferenced(gone->blob_digests, started);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->blobs_deleted, 2);
  EXPECT_FALSE(reg_->blobs().Exists(own_version_blob).value());
  EXPECT_TRUE(reg_->blobs().Exists(shared_blob).value());
  // A blob written again after the deletion began (another tenant's upcoming publish) is kept.
  absl::SleepFor(absl::Milliseconds(20));  // file times come from a coarse clock
  const std::string again = PutBlob("acme only");
  ASSERT_EQ(again, own_version_blob);
  stats = reg_->DeleteBlobsIfUnreferenced({again}, started);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->blobs_deleted, 0);
  EXPECT_EQ(stats->blobs_kept_grace, 1);

  // The id is free again and starts afresh.
  MakeTenant("acme");
  EXPECT_EQ(Publish("acme"), 1);
  EXPECT_EQ(reg_->GetLive("acme").value(), 0);
}

// ---- Live pointers ----------------------------------------------------------------------------------

TEST_F(RegistryTest, PromoteMovesLiveAndBumpsSequence) {
  MakeTenant("acme");
  Publish("acme");
  Publish("acme");
  const int64_t seq0 = reg_->ChangeSequence().value();
  EXPECT_EQ(seq0, 2);  // two publishes
  auto m = reg_->Promote("acme", 2, "admin-key");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->changed);
  EXPECT_EQ(m->previous_live, 0);
  EXPECT_EQ(m->live_version, 2);
  EXPECT_EQ(m->seq, seq0 + 1);
  EXPECT_EQ(reg_->GetLive("acme").value(), 2);
  EXPECT_EQ(reg_->ChangeSequence().value(), seq0 + 1);
  EXPECT_TRUE(reg_->GetVersion("acme", 2).value().live);
  EXPECT_FALSE(reg_->GetVersion("acme", 1).value().live);
  EXPECT_TRUE(reg_->ListVersions("acme").value()[0].live);

  // Promoting the live version is a documented no-op.
  auto again = reg_->Promote("acme", 2, "admin-key");
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->changed);
  EXPECT_EQ(again->seq, seq0 + 1);
  EXPECT_EQ(reg_->ChangeSequence().value(), seq0 + 1);

  EXPECT_CODE(reg_->Promote("acme", 3, "admin-key"), kNotFound);
  EXPECT_CODE(reg_->Promote("acme", -1, "admin-key"), kInvalidArgument);
  EXPECT_CODE(reg_->Promote("ghost", 1, "admin-key"), kNotFound);
  EXPECT_CODE(reg_->GetLive("ghost"), kNotFound);
  EXPECT_EQ(reg_->GetLive("acme").value(), 2);

  // Promote to 0 (the base) is allowed.
  ASSERT_TRUE(reg_->Promote("acme", 0, "admin-key").value().changed);
  EXPECT_EQ(reg_->GetLive("acme").value(), 0);
}

TEST_F(RegistryTest, RollbackWalksBackThroughHistory) {
  MakeTenant("acme");
  for (int i = 0; i < 3; ++i) Publish("acme");
  EXPECT_CODE(reg_->Rollback("acme", std::nullopt, "k"), kFailedPrecondition);  // never moved
  ASSERT_OK(reg_->Promote("acme", 1, "k"));
  ASSERT_OK(reg_->Promote("acme", 2, "k"));
  ASSERT_OK(reg_->Promote("acme", 3, "k"));
  auto r = reg_->Rollback("acme", std::nullopt, "k");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->previous_live, 3);
  EXPECT_EQ(r->live_version, 2);
  EXPECT_EQ(reg_->Rollback("acme", std::nullopt, "k").value().live_version, 1);
  EXPECT_EQ(reg_->Rollback("acme", std::nullopt, "k").value().live_version, 0);
  EXPECT_CODE(reg_->Rollback("acme", std::nullopt, "k"), kFailedPrecondition);
  EXPECT_EQ(reg_->GetLive("acme").value(), 0);
}

TEST_F(RegistryTest, RollbackAfterPromoteAndJumps) {
  MakeTenant("acme");
  for (int i = 0; i < 4; ++i) Publish("acme");
  ASSERT_OK(reg_->Promote("acme", 1, "k"));
  ASSERT_OK(reg_->Promote("acme", 2, "k"));
  // Rollback, then promote something new: rolling back returns to what was live before the promote.
  EXPECT_EQ(reg_->Rollback("acme", std::nullopt, "k").value().live_version, 1);
  ASSERT_OK(reg_->Promote("acme", 4, "k"));
  EXPECT_EQ(reg_->Rollback("acme", std::nullopt, "k").value().live_version, 1);
  EXPECT_EQ(reg_->Rollback("acme", std::nullopt, "k").value().live_version, 0);
  // Jump to a named version, then undo the jump with a plain rollback.
  ASSERT_OK(reg_->Promote("acme", 2, "k"));
  auto jump = reg_->Rollback("acme", 1, "k");
  ASSERT_TRUE(jump.ok());
  EXPECT_EQ(jump->live_version, 1);
  EXPECT_EQ(reg_->Rollback("acme", std::nullopt, "k").value().live_version, 2);
  // Jump to the base and to the live one (no-op); unknown target.
  EXPECT_EQ(reg_->Rollback("acme", 0, "k").value().live_version, 0);
  EXPECT_FALSE(reg_->Rollback("acme", 0, "k").value().changed);
  EXPECT_CODE(reg_->Rollback("acme", 9, "k"), kNotFound);
  EXPECT_CODE(reg_->Rollback("ghost", std::nullopt, "k"), kNotFound);
  // The history lists every move, newest first.
  auto hist = reg_->ListLiveHistory("acme");
  ASSERT_TRUE(hist.ok());
  ASSERT_EQ(hist->size(), 10u);
  EXPECT_EQ((*hist)[0].kind, ChangeKind::kRollback);
  EXPECT_EQ((*hist)[0].live_version, 0);
  EXPECT_EQ((*hist)[0].previous_live, 2);
  EXPECT_EQ(hist->back().kind, ChangeKind::kPromote);
  EXPECT_EQ(hist->back().live_version, 1);
  EXPECT_EQ(reg_->ListLiveHistory("acme", 2).value().size(), 2u);
}

TEST_F(RegistryTest, LivePointersAreIndependentPerTenant) {
  MakeTenant("acme");
  MakeTenant("beta");
  Publish("acme");
  Publish("beta");
  Publish("beta");
  ASSERT_OK(reg_->Promote("acme", 1, "k"));
  ASSERT_OK(reg_->Promote("beta", 2, "k"));
  ASSERT_OK(reg_->Rollback("acme", std::nullopt, "k"));
  EXPECT_EQ(reg_->GetLive("acme").value(), 0);
  EXPECT_EQ(reg_->GetLive("beta").value(), 2);
}

TEST_F(RegistryTest, ChangeFeedForFollowers) {
  MakeTenant("acme");
  EXPECT_EQ(reg_->ChangeSequence().value(), 0);
  Publish("acme");
  ASSERT_OK(reg_->Promote("acme", 1, "admin-1"));
  ASSERT_OK(reg_->Rollback("acme", std::nullopt, "admin-2"));
  auto all = reg_->ListChangesSince(0);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].kind, ChangeKind::kPublish);
  EXPECT_EQ((*all)[0].version, 1);
  EXPECT_EQ((*all)[0].live_version, 0);
  EXPECT_EQ((*all)[1].kind, ChangeKind::kPromote);
  EXPECT_EQ((*all)[1].live_version, 1);
  EXPECT_EQ((*all)[1].actor, "admin-1");
  EXPECT_EQ((*all)[2].kind, ChangeKind::kRollback);
  EXPECT_EQ((*all)[2].live_version, 0);
  EXPECT_EQ((*all)[2].previous_live, 1);
  for (size_t i = 1; i < all->size(); ++i) EXPECT_EQ((*all)[i].seq, (*all)[i - 1].seq + 1);
  auto since = reg_->ListChangesSince((*all)[1].seq);
  ASSERT_EQ(since.value().size(), 1u);
  EXPECT_EQ(reg_->ListChangesSince(0, 2).value().size(), 2u);
  EXPECT_TRUE(reg_->ListChangesSince(reg_->ChangeSequence().value()).value().empty());
}

TEST_F(RegistryTest, WaitForChangeWakesOnPromote) {
  MakeTenant("acme");
  Publish("acme");
  const int64_t seq = reg_->ChangeSequence().value();
  EXPECT_FALSE(reg_->WaitForChange(seq, absl::Milliseconds(30)).value());
  std::thread promoter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_OK(reg_->Promote("acme", 1, "k"));
  });
  const absl::Time start = absl::Now();
  auto woke = reg_->WaitForChange(seq, absl::Seconds(20));
  promoter.join();
  ASSERT_TRUE(woke.ok());
  EXPECT_TRUE(*woke);
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  EXPECT_TRUE(reg_->WaitForChange(0, absl::ZeroDuration()).value());
}

// ---- Audit ----------------------------------------------------------------------------------------

TEST_F(RegistryTest, MutationsAreAudited) {
  MakeTenant("acme");
  auto key = reg_->CreateApiKey(Role::kTenant, "acme", "admin-key");
  ASSERT_TRUE(key.ok());
  ASSERT_OK(reg_->RevokeApiKey(key->key.key_id, "admin-key"));
  const std::string ds = MakeDataset("acme");
  const std::string job = MakeJob("acme", ds);
  ASSERT_OK(reg_->CancelJob("acme", job, "tenant-key"));
  ASSERT_OK(reg_->DeleteDataset("acme", ds, "tenant-key"));
  Publish("acme");
  ASSERT_OK(reg_->Promote("acme", 1, "admin-key"));
  ASSERT_OK(reg_->Rollback("acme", std::nullopt, "admin-key"));
  ASSERT_OK(reg_->AppendAudit("svc", "custom.action", "thing/1", "{\"x\":1}"));
  EXPECT_CODE(reg_->AppendAudit("svc", "", "thing/1", ""), kInvalidArgument);

  auto log = reg_->ListAudit(0);
  ASSERT_TRUE(log.ok());
  std::vector<std::string> actions;
  for (const AuditEntry& e : *log) actions.push_back(e.action);
  const std::vector<std::string> want = {
      "tenant.create", "apikey.create",   "apikey.revoke",    "dataset.create",
      "job.create",    "job.cancel",      "dataset.delete",   "version.publish",
      "version.promote", "version.rollback", "custom.action"};
  EXPECT_EQ(actions, want);
  EXPECT_EQ((*log)[0].actor, "admin-key");
  EXPECT_EQ((*log)[0].target, "tenant/acme");
  EXPECT_EQ((*log)[8].target, "tenant/acme/version/1");
  EXPECT_EQ(log->back().detail, "{\"x\":1}");
  for (size_t i = 1; i < log->size(); ++i) {
    EXPECT_GT((*log)[i].id, (*log)[i - 1].id);
    EXPECT_GE((*log)[i].created_at_us, (*log)[i - 1].created_at_us);
  }
  auto tail = reg_->ListAudit((*log)[8].id);
  ASSERT_EQ(tail.value().size(), 2u);
  EXPECT_EQ(reg_->ListAudit(0, 3).value().size(), 3u);
  // No-op promote writes nothing.
  ASSERT_OK(reg_->Promote("acme", 0, "admin-key"));
  EXPECT_EQ(reg_->ListAudit(0).value().size(), log->size());
}

// ---- Blob GC --------------------------------------------------------------------------------------

void AgeBlob(BlobBackend& blobs, const std::string& digest) {
  struct timespec old_times[2] = {{1000, 0}, {1000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, blobs.Path(digest).value().c_str(), old_times, 0), 0);
}

TEST_F(RegistryTest, GarbageCollectionDeletesOnlyOldUnreferencedBlobs) {
  MakeTenant("acme");
  const int64_t v = Publish("acme");
  const std::string version_blob = reg_->GetVersion("acme", v).value().sha256;
  const std::string ds = MakeDataset("acme");
  const std::string ds_blob = reg_->GetDataset("acme", ds).value().sha256;
  const std::string orphan_old = PutBlob("orphan old");
  const std::string orphan_young = PutBlob("orphan young");
  for (const std::string& d : {version_blob, ds_blob, orphan_old}) AgeBlob(reg_->blobs(), d);

  auto stats = reg_->CollectGarbage(absl::Minutes(10));
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->blobs_scanned, 4);
  EXPECT_EQ(stats->blobs_deleted, 1);
  EXPECT_EQ(stats->blobs_kept_grace, 1);
  EXPECT_EQ(stats->bytes_freed, 10);
  EXPECT_FALSE(reg_->blobs().Exists(orphan_old).value());
  EXPECT_TRUE(reg_->blobs().Exists(orphan_young).value());
  EXPECT_TRUE(reg_->blobs().Verify(version_blob).ok());
  EXPECT_TRUE(reg_->blobs().Verify(ds_blob).ok());

  // Once the dataset row is gone its blob is collectable.
  ASSERT_OK(reg_->DeleteDataset("acme", ds, "k"));
  EXPECT_EQ(reg_->CollectGarbage(absl::Minutes(10)).value().blobs_deleted, 1);
  EXPECT_FALSE(reg_->blobs().Exists(ds_blob).value());
  // Grace zero collects the young orphan too, never a referenced blob.
  EXPECT_EQ(reg_->CollectGarbage(absl::ZeroDuration()).value().blobs_deleted, 1);
  EXPECT_TRUE(reg_->blobs().Verify(version_blob).ok());
  EXPECT_CODE(reg_->CollectGarbage(absl::Seconds(-1)), kInvalidArgument);
}

TEST_F(RegistryTest, GarbageCollectionKeepsCheckpointsOfUnfinishedJobsOnly) {
  MakeTenant("acme");
  const std::string ds = MakeDataset("acme");
  const std::string job = MakeJob("acme", ds);
  auto claimed = reg_->ClaimNextJob("w1", absl::Minutes(5));
  ASSERT_TRUE(claimed.ok() && claimed->has_value()) << claimed.status();
  const std::string old_ckpt = PutBlob("checkpoint at step 10");
  const std::string new_ckpt = PutBlob("checkpoint at step 20");
  JobUpdate u;
  u.checkpoint = old_ckpt;
  ASSERT_OK(reg_->UpdateRunningJob(job, "w1", u));
  u.checkpoint = new_ckpt;  // supersedes the old one
  ASSERT_OK(reg_->UpdateRunningJob(job, "w1", u));
  for (const std::string& d : {old_ckpt, new_ckpt}) AgeBlob(reg_->blobs(), d);

  // However old, the running job's current checkpoint is a reference; the superseded one is not.
  EXPECT_EQ(reg_->CollectGarbage(absl::Minutes(10)).value().blobs_deleted, 1);
  EXPECT_FALSE(reg_->blobs().Exists(old_ckpt).value());
  EXPECT_TRUE(reg_->blobs().Verify(new_ckpt).ok());

  // Once the job has ended (here: cancelled) nothing resumes from it: collectable.
  ASSERT_OK(reg_->CancelJob("acme", job, "k").status());
  EXPECT_EQ(reg_->CollectGarbage(absl::Minutes(10)).value().blobs_deleted, 1);
  EXPECT_FALSE(reg_->blobs().Exists(new_ckpt).value());
}

TEST_F(RegistryTest, RePutOfCollectableBlobProtectsItAndPublishAfterDeleteFails) {
  MakeTenant("acme");
  const std::string blob = PutBlob("will be published");
  AgeBlob(reg_->blobs(), blob);
  // A publisher re-puts (refreshing mtime) just before GC: the blob survives and the publish works.
  ASSERT_EQ(PutBlob("will be published"), blob);
  EXPECT_EQ(reg_->CollectGarbage(absl::Minutes(10)).value().blobs_deleted, 0);
  NewVersion v;
  v.tenant_id = "acme";
  v.blob_digest = blob;
  ASSERT_OK(reg_->PublishVersion(v, "k"));
  // A blob collected before its publish makes the publish fail cleanly (no row without a blob).
  const std::string gone = PutBlob("collected first");
  ASSERT_EQ(reg_->CollectGarbage(absl::ZeroDuration()).value().blobs_deleted, 1);
  v.blob_digest = gone;
  EXPECT_CODE(reg_->PublishVersion(v, "k"), kFailedPrecondition);
  EXPECT_EQ(reg_->ListVersions("acme").value().size(), 1u);
}

// ---- Job state machine ----------------------------------------------------------------------------

TEST(JobStateMachineTest, TransitionTable) {
  using S = JobState;
  const S all[] = {S::kQueued, S::kRunning, S::kSucceeded, S::kFailed, S::kCancelled};
  const std::set<std::pair<S, S>> allowed = {
      {S::kQueued, S::kRunning},     {S::kQueued, S::kCancelled},  {S::kQueued, S::kFailed},
      {S::kRunning, S::kSucceeded},  {S::kRunning, S::kFailed},    {S::kRunning, S::kCancelled},
      {S::kRunning, S::kQueued}};
  for (S from : all) {
    for (S to : all) {
      const absl::Status s = CheckJobTransition(from, to);
      if (allowed.count({from, to})) {
        EXPECT_TRUE(s.ok()) << JobStateName(from) << "->" << JobStateName(to);
      } else {
        EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition)
            << JobStateName(from) << "->" << JobStateName(to);
      }
    }
  }
  for (S s : all) {
    EXPECT_EQ(ParseJobState(JobStateName(s)).value(), s);
    EXPECT_EQ(IsTerminal(s), s == S::kSucceeded || s == S::kFailed || s == S::kCancelled);
  }
  EXPECT_EQ(ParseJobState("PAUSED").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::storage
