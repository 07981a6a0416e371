// Registry quotas (storage/quotas.h): overrides over defaults, persistence, audit, and the count and size
// limits enforced inside the registry's transactions (datasets, jobs, versions, claims).
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "storage/quota_refusal.h"
#include "storage/registry.h"
#include "tests/storage/registry_test_util.h"

namespace tessera::storage::testing {
namespace {

class QuotasTest : public RegistryTest {
 protected:
  QuotaOverrides Set(Quota q, int64_t v) {
    QuotaOverrides o;
    o[q] = v;
    return o;
  }
  void SetQuota(const std::string& tenant, Quota q, int64_t v) {
    ASSERT_OK(reg_->SetQuotas(tenant, Set(q, v), "admin-key"));
  }
};

TEST_F(QuotasTest, OverridesApplyOverDefaultsPersistAndAreAudited) {
  Registry::Options o;
  o.default_quotas[Quota::kRequestsPerSecond] = 50;
  o.default_quotas[Quota::kMaxVersions] = 1000;
  Reopen(o);
  MakeTenant("acme");
  absl::StatusOr<TenantQuotas> q = reg_->GetQuotas("acme");
  ASSERT_OK(q);
  EXPECT_EQ(q->effective, o.default_quotas);
  for (int i = 0; i < kNumQuotas; ++i) EXPECT_FALSE(q->overrides.value[i].has_value()) << i;

  QuotaOverrides update;
  update[Quota::kRequestsPerSecond] = 5;
  update[Quota::kMaxVersions] = 0;  // unlimited, not "the default"
  update[Quota::kStorageBytes] = 1234;
  q = reg_->SetQuotas("acme", update, "admin-key");
  ASSERT_OK(q);
  EXPECT_EQ(q->effective[Quota::kRequestsPerSecond], 5);
  EXPECT_EQ(q->effective[Quota::kMaxVersions], 0);
  EXPECT_EQ(q->effective[Quota::kStorageBytes], 1234);
  EXPECT_EQ(q->overrides[Quota::kMaxVersions], 0);
  EXPECT_FALSE(q->overrides[Quota::kTokensPerMinute].has_value());
  // The rate limiter's read: the same effective limits, without the usage.
  absl::StatusOr<QuotaLimits> limits = reg_->GetQuotaLimits("acme");
  ASSERT_OK(limits);
  EXPECT_EQ(*limits, q->effective);
  EXPECT_EQ(reg_->GetQuotaLimits("nosuch").status().code(), absl::StatusCode::kNotFound);

  // Unset entries are left alone; -1 returns one to the default.
  q = reg_->SetQuotas("acme", Set(Quota::kRequestsPerSecond, kClearQuotaOverride), "admin-key");
  ASSERT_OK(q);
  EXPECT_EQ(q->effective[Quota::kRequestsPerSecond], 50);
  EXPECT_FALSE(q->overrides[Quota::kRequestsPerSecond].has_value());
  EXPECT_EQ(q->effective[Quota::kStorageBytes], 1234);

  // Persisted: a reopened registry (other defaults) keeps the overrides.
  o.default_quotas[Quota::kRequestsPerSecond] = 7;
  Reopen(o);
  q = reg_->GetQuotas("acme");
  ASSERT_OK(q);
  EXPECT_EQ(q->effective[Quota::kRequestsPerSecond], 7);
  EXPECT_EQ(q->effective[Quota::kStorageBytes], 1234);
  EXPECT_EQ(q->effective[Quota::kMaxVersions], 0);

  absl::StatusOr<std::vector<AuditEntry>> audit = reg_->ListAudit(0);
  ASSERT_OK(audit);
  int sets = 0;
  for (const AuditEntry& e : *audit) {
    if (e.action != "tenant.quotas.set") continue;
    ++sets;
    EXPECT_EQ(e.target, "tenant/acme");
    EXPECT_EQ(e.tenant_id, "acme");
    EXPECT_EQ(e.actor, "admin-key");
  }
  EXPECT_EQ(sets, 2);

  EXPECT_CODE(reg_->SetQuotas("acme", Set(Quota::kMaxQueuedJobs, -2), "admin-key"), kInvalidArgument);
  EXPECT_CODE(reg_->SetQuotas("nobody", Set(Quota::kMaxQueuedJobs, 1), "admin-key"), kNotFound);
  EXPECT_CODE(reg_->GetQuotas("nobody"), kNotFound);
}

TEST_F(QuotasTest, StorageBytesBoundDatasetsUntilSomethingIsDeleted) {
  MakeTenant("acme");
  const std::string d1 = MakeDataset("acme");
  absl::StatusOr<TenantQuotas> q = reg_->GetQuotas("acme");
  ASSERT_OK(q);
  const int64_t one = q->usage.dataset_bytes;
  ASSERT_GT(one, 0);
  SetQuota("acme", Quota::kStorageBytes, one + one / 2);
  NewDataset d;
  d.tenant_id = "acme";
  d.name = "second";
  d.format = "jsonl";
  d.blob_digest = PutBlob("{\"text\": \"acmetrain0\"}\n");  // as long as the first
  d.num_examples = 1;
  absl::StatusOr<Dataset> refused = reg_->CreateDataset(d, "tenant-key");
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "storage_bytes limit")) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), absl::StrCat(one + one / 2, " bytes"))) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "retry after deleting datasets")) << refused.status();
  // Another tenant is not affected.
  MakeTenant("other");
  MakeDataset("other");
  ASSERT_OK(reg_->DeleteDataset("acme", d1, "tenant-key"));
  EXPECT_OK(reg_->CreateDataset(d, "tenant-key"));
}

TEST_F(QuotasTest, QueuedJobsAreBoundedAtCreateJob) {
  MakeTenant("acme");
  const std::string ds = MakeDataset("acme");
  SetQuota("acme", Quota::kMaxQueuedJobs, 2);
  const std::string j1 = MakeJob("acme", ds);
  MakeJob("acme", ds);
  NewJob j;
  j.tenant_id = "acme";
  j.spec = "{}";
  j.training_dataset_id = ds;
  absl::StatusOr<Job> refused = reg_->CreateJob(j, "tenant-key");
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "max_queued_jobs limit 2 jobs")) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "retry once one of them starts or is cancelled"));
  // The refusal names its tenant and quota for the services' refusal counter.
  std::optional<QuotaRefusalInfo> info = QuotaRefusalOf(refused.status());
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->tenant_id, "acme");
  EXPECT_EQ(info->quota, "max_queued_jobs");
  EXPECT_FALSE(QuotaRefusalOf(absl::ResourceExhaustedError("some other limit")).has_value());
  // An idempotent replay of an existing job is not a new job.
  j.idempotency_key = "k";
  SetQuota("acme", Quota::kMaxQueuedJobs, 3);
  ASSERT_OK(reg_->CreateJob(j, "tenant-key"));
  EXPECT_OK(reg_->CreateJob(j, "tenant-key"));
  ASSERT_OK(reg_->CancelJob("acme", j1, "tenant-key"));
  j.idempotency_key = "";
  EXPECT_OK(reg_->CreateJob(j, "tenant-key"));
}

TEST_F(QuotasTest, VersionsAreBoundedAtCreateJobBeforeTrainingAndAtPublish) {
  MakeTenant("acme");
  const std::string ds = MakeDataset("acme");
  SetQuota("acme", Quota::kMaxVersions, 2);
  Publish("acme");
  const std::string job = MakeJob("acme", ds);  // 1 version + 1 unfinished job = 2
  NewJob j;
  j.tenant_id = "acme";
  j.spec = "{}";
  j.training_dataset_id = ds;
  absl::StatusOr<Job> refused = reg_->CreateJob(j, "tenant-key");
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "max_versions limit 2 versions")) << refused.status();
  // The queued job can still publish.
  absl::StatusOr<std::optional<Job>> claimed = reg_->ClaimNextJob("w", absl::Seconds(30));
  ASSERT_OK(claimed);
  ASSERT_TRUE(claimed->has_value());
  EXPECT_OK(reg_->CheckPublishQuota("acme", job));
  // Lowered meanwhile: the job would fail before training, and a publish is refused.
  SetQuota("acme", Quota::kMaxVersions, 1);
  absl::Status before = reg_->CheckPublishQuota("acme", job);
  EXPECT_EQ(before.code(), absl::StatusCode::kResourceExhausted) << before;
  EXPECT_TRUE(absl::StrContains(before.message(), "max_versions limit 1 versions")) << before;
  NewVersion v;
  v.tenant_id = "acme";
  v.blob_digest = PutBlob("more weights");
  EXPECT_CODE(reg_->PublishVersion(v, "system"), kResourceExhausted);
  SetQuota("acme", Quota::kMaxVersions, 0);
  EXPECT_OK(reg_->PublishVersion(v, "system"));
}

TEST_F(QuotasTest, StorageBytesBoundPublishAndNewJobs) {
  MakeTenant("acme");
  const std::string ds = MakeDataset("acme");
  absl::StatusOr<TenantQuotas> q = reg_->GetQuotas("acme");
  ASSERT_OK(q);
  const int64_t used = q->usage.storage_bytes();
  SetQuota("acme", Quota::kStorageBytes, used + 10);
  NewVersion v;
  v.tenant_id = "acme";
  v.blob_digest = PutBlob(std::string(11, 'w'));
  absl::StatusOr<ExpertVersion> refused = reg_->PublishVersion(v, "system");
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "the version of 11 bytes would exceed it")) << refused.status();
  v.blob_digest = PutBlob(std::string(10, 'w'));
  ASSERT_OK(reg_->PublishVersion(v, "system"));
  // Full: a new job could not store its version.
  NewJob j;
  j.tenant_id = "acme";
  j.spec = "{}";
  j.training_dataset_id = ds;
  absl::StatusOr<Job> job = reg_->CreateJob(j, "tenant-key");
  ASSERT_EQ(job.status().code(), absl::StatusCode::kResourceExhausted) << job.status();
  EXPECT_TRUE(absl::StrContains(job.status().message(), "no room for the version this job would publish"))
      << job.status();
  q = reg_->GetQuotas("acme");
  ASSERT_OK(q);
  EXPECT_EQ(q->usage.version_bytes, 10);
  EXPECT_EQ(q->usage.versions, 1);
  EXPECT_EQ(q->usage.storage_bytes(), used + 10);
}

TEST_F(QuotasTest, RunningJobsLimitMakesClaimsSkipTheTenantUntilOneFinishes) {
  Registry::Options o;
  o.default_quotas[Quota::kMaxRunningJobs] = 1;
  Reopen(o);
  MakeTenant("acme");
  MakeTenant("bob");
  const std::string a = MakeDataset("acme");
  const std::string b = MakeDataset("bob");
  const std::string a1 = MakeJob("acme", a);
  const std::string a2 = MakeJob("acme", a);
  const std::string b1 = MakeJob("bob", b);
  const std::string b2 = MakeJob("bob", b);
  SetQuota("bob", Quota::kMaxRunningJobs, 0);  // unlimited override
  std::vector<std::string> claimed;
  for (;;) {
    absl::StatusOr<std::optional<Job>> c = reg_->ClaimNextJob("w", absl::Seconds(30));
    ASSERT_OK(c);
    if (!c->has_value()) break;
    claimed.push_back((*c)->job_id);
  }
  // acme runs one (the default limit), bob both (its override); a2 waits, queued.
  EXPECT_EQ(claimed.size(), 3u);
  EXPECT_EQ(std::count(claimed.begin(), claimed.end(), a2), 0);
  absl::StatusOr<Job> waiting = reg_->GetJob("acme", a2);
  ASSERT_OK(waiting);
  EXPECT_EQ(waiting->state, JobState::kQueued);
  JobResult r;
  r.state = JobState::kFailed;
  r.error = "test";
  ASSERT_OK(reg_->FinishJob(a1, "w", r));
  absl::StatusOr<std::optional<Job>> next = reg_->ClaimNextJob("w", absl::Seconds(30));
  ASSERT_OK(next);
  ASSERT_TRUE(next->has_value());
  EXPECT_EQ((*next)->job_id, a2);
  (void)b1;
  (void)b2;
}

// The limit only removes tenants from the claim; among the rest the order is the queue's: fewest RUNNING
// jobs first, then the tenant served longest ago.
TEST_F(QuotasTest, ClaimsKeepTheFairOrderAmongTenantsUnderTheirLimit) {
  MakeTenant("acme");
  MakeTenant("bob");
  MakeTenant("carol");
  std::map<std::string, std::string> tenant_of;
  for (const char* t : {"acme", "bob", "carol"}) {
    const std::string ds = MakeDataset(t);
    tenant_of[MakeJob(t, ds)] = t;
    tenant_of[MakeJob(t, ds)] = t;
  }
  SetQuota("acme", Quota::kMaxRunningJobs, 1);
  std::vector<std::string> order;
  for (;;) {
    absl::StatusOr<std::optional<Job>> c = reg_->ClaimNextJob("w", absl::Seconds(30));
    ASSERT_OK(c);
    if (!c->has_value()) break;
    order.push_back(tenant_of[(*c)->job_id]);
  }
  EXPECT_EQ(order, (std::vector<std::string>{"acme", "bob", "carol", "bob", "carol"}));
}

// A registry a migration test opens below migration 12 has no tenant_quotas: the defaults apply, the
// checks still work, overrides are refused until it is migrated, and then they are stored.
TEST(QuotasMigrationTest, BeforeMigrationTwelveOnlyDefaultsApply) {
  TempDir dir;
  TestDb db;
  TESSERA_REQUIRE_DB(db);
  Registry::Options at_eleven;
  at_eleven.migrate_to = 11;
  at_eleven.default_quotas[Quota::kMaxQueuedJobs] = 1;
  {
    auto r = Registry::Open(dir.path(), db.Options(at_eleven));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_OK((*r)->CreateTenant("legacy", "Legacy Co", "admin"));
    auto d = (*r)->blobs().Put("{\"text\": \"x\"}\n");
    ASSERT_TRUE(d.ok()) << d.status();
    auto ds = (*r)->CreateDataset(NewDataset{"legacy", "n", "jsonl", *d, 1, 3, 2}, "admin");
    ASSERT_TRUE(ds.ok()) << ds.status();
    NewJob j;
    j.tenant_id = "legacy";
    j.spec = "{}";
    j.training_dataset_id = ds->dataset_id;
    ASSERT_OK((*r)->CreateJob(j, "admin"));
    EXPECT_CODE((*r)->CreateJob(j, "admin"), kResourceExhausted);  // the default max_queued_jobs
    absl::StatusOr<std::optional<Job>> claimed = (*r)->ClaimNextJob("w", absl::Seconds(30));
    ASSERT_OK(claimed);
    EXPECT_TRUE(claimed->has_value());
    absl::StatusOr<TenantQuotas> q = (*r)->GetQuotas("legacy");
    ASSERT_OK(q);
    EXPECT_EQ(q->effective, at_eleven.default_quotas);
    QuotaOverrides o;
    o[Quota::kMaxQueuedJobs] = 5;
    EXPECT_CODE((*r)->SetQuotas("legacy", o, "admin"), kFailedPrecondition);
  }
  Registry::Options latest;
  latest.default_quotas = at_eleven.default_quotas;
  auto r = Registry::Open(dir.path(), db.Options(latest));
  ASSERT_TRUE(r.ok()) << r.status();
  QuotaOverrides o;
  o[Quota::kMaxQueuedJobs] = 5;
  absl::StatusOr<TenantQuotas> q = (*r)->SetQuotas("legacy", o, "admin");
  ASSERT_OK(q);
  EXPECT_EQ(q->effective[Quota::kMaxQueuedJobs], 5);
  EXPECT_EQ(q->usage.running_jobs, 1);
}

TEST_F(QuotasTest, DeletingATenantRemovesItsQuotas) {
  MakeTenant("acme");
  SetQuota("acme", Quota::kMaxVersions, 3);
  ASSERT_OK(reg_->DeleteTenant("acme", "admin-key"));
  MakeTenant("acme");
  absl::StatusOr<TenantQuotas> q = reg_->GetQuotas("acme");
  ASSERT_OK(q);
  EXPECT_FALSE(q->overrides[Quota::kMaxVersions].has_value());
}

}  // namespace
}  // namespace tessera::storage::testing
