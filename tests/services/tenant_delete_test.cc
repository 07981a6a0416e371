// Admin.DeleteTenant through a real server with the random:tiny runtime: refused while a job is queued
// unless forced, then the tenant's requests fail (its keys UNAUTHENTICATED, an admin key NOT_FOUND),
// its rows and unshared blobs are gone, a blob shared by content with another tenant's version stays,
// the other tenant is served exactly as before, the deletion is audited, and the id can be reused.
#include <set>

#include "gtest/gtest.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

grpc::Status Generate(TestServer& server, const std::string& key, const std::string& tenant,
                      v1::GenerateResponse* out) {
  v1::GenerateRequest g;
  g.set_tenant_id(tenant);
  g.set_prompt("add(2,3)=");
  g.set_max_tokens(6);
  return server.Inference()->Generate(Ctx(key).get(), g, out);
}

bool BlobExists(TestServer& server, const std::string& digest) {
  absl::StatusOr<bool> e = server.registry().blobs().Exists(digest);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.value_or(true);
}

TEST(TenantDeleteTest, DeletesEverythingOfTheTenantAndNothingElse) {
  TestServer server(WithModel());
  const std::string acme = server.CreateTenant("acme");
  const std::string beta = server.CreateTenant("beta");
  // Same slots and scale: the same bytes, so one content-addressed blob serves both tenants' version 1.
  ASSERT_EQ(PublishScaledVersion(server.registry(), "acme", {{0, 1}}, 3.0f), 1);
  ASSERT_EQ(PublishScaledVersion(server.registry(), "beta", {{0, 1}}, 3.0f), 1);
  ASSERT_EQ(PublishScaledVersion(server.registry(), "acme", {{1, 2}}, -2.0f), 2);
  const std::string shared = server.registry().GetVersion("acme", 1).value().sha256;
  ASSERT_EQ(server.registry().GetVersion("beta", 1).value().sha256, shared);
  const std::string own = server.registry().GetVersion("acme", 2).value().sha256;
  for (auto [tenant, version] : {std::pair<std::string, int64_t>{"acme", 2}, {"beta", 1}}) {
    v1::PromoteRequest pr;
    pr.set_tenant_id(tenant);
    pr.set_version(version);
    v1::LiveVersionResponse lr;
    ASSERT_TRUE(server.Admin()->Promote(Ctx(server.admin_key()).get(), pr, &lr).ok());
  }
  v1::Dataset ds;
  ASSERT_TRUE(server.Upload(acme, "acme", "add", AdditionJsonl(8, /*seed=*/7), &ds).ok());
  v1::CreateJobRequest jreq;
  jreq.set_tenant_id("acme");
  jreq.set_training_dataset_id(ds.dataset_id());
  jreq.mutable_hyperparameters()->set_max_steps(5);
  v1::Job job;  // stays QUEUED: this server runs no jobs
  ASSERT_TRUE(server.FineTuning()->CreateJob(Ctx(acme).get(), jreq, &job).ok());

  v1::GenerateResponse before_acme, before_beta;
  ASSERT_TRUE(Generate(server, acme, "acme", &before_acme).ok());
  EXPECT_EQ(before_acme.expert_version(), 2);
  ASSERT_TRUE(Generate(server, beta, "beta", &before_beta).ok());
  EXPECT_EQ(before_beta.expert_version(), 1);

  // A queued job blocks the deletion unless forced; a TENANT key may not delete at all.
  v1::DeleteTenantRequest del;
  del.set_tenant_id("acme");
  v1::DeleteTenantResponse resp;
  grpc::Status st = server.Admin()->DeleteTenant(Ctx(server.admin_key()).get(), del, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(st.error_message().find(job.job_id()), std::string::npos) << st.error_message();
  EXPECT_NE(st.error_message().find("force"), std::string::npos) << st.error_message();
  EXPECT_EQ(server.Admin()->DeleteTenant(Ctx(acme).get(), del, &resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_TRUE(Generate(server, acme, "acme", &before_acme).ok());  // nothing happened

  del.set_force(true);
  st = server.Admin()->DeleteTenant(Ctx(server.admin_key()).get(), del, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.api_keys_deleted(), 1);
  EXPECT_EQ(resp.datasets_deleted(), 1);
  EXPECT_EQ(resp.versions_deleted(), 2);
  EXPECT_EQ(resp.jobs_deleted(), 1);
  EXPECT_EQ(resp.jobs_cancelled(), 1);
  EXPECT_EQ(resp.blobs_deleted(), 2);  // version 2 and the dataset
  EXPECT_EQ(resp.blobs_kept(), 1);     // shared with beta's version 1
  EXPECT_GT(resp.bytes_freed(), 0);

  // The tenant's requests fail from now on.
  v1::GenerateResponse g;
  EXPECT_EQ(Generate(server, acme, "acme", &g).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  st = Generate(server, server.admin_key(), "acme", &g);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();
  v1::ListVersionsRequest lv;
  lv.set_tenant_id("acme");
  v1::ListVersionsResponse lvr;
  EXPECT_EQ(server.Admin()->ListVersions(Ctx(server.admin_key()).get(), lv, &lvr).error_code(),
            grpc::StatusCode::NOT_FOUND);
  v1::ListTenantsResponse tenants;
  ASSERT_TRUE(server.Admin()->ListTenants(Ctx(server.admin_key()).get(), {}, &tenants).ok());
  ASSERT_EQ(tenants.tenants_size(), 1);
  EXPECT_EQ(tenants.tenants(0).tenant_id(), "beta");
  EXPECT_EQ(server.Admin()->DeleteTenant(Ctx(server.admin_key()).get(), del, &resp).error_code(),
            grpc::StatusCode::NOT_FOUND);

  // Blobs: the unshared ones are gone, the shared one stays.
  EXPECT_FALSE(BlobExists(server, own));
  EXPECT_FALSE(BlobExists(server, ds.sha256()));
  EXPECT_TRUE(BlobExists(server, shared));
  EXPECT_TRUE(server.registry().blobs().Verify(shared).ok());

  // The other tenant is served exactly as before.
  v1::GenerateResponse after_beta;
  ASSERT_TRUE(Generate(server, beta, "beta", &after_beta).ok());
  EXPECT_EQ(after_beta.expert_version(), 1);
  EXPECT_EQ(after_beta.text(), before_beta.text());

  // Audited with the admin key as actor.
  auto audit = server.registry().ListAudit(0);
  ASSERT_TRUE(audit.ok());
  bool found = false;
  const std::string admin_key_id = server.admin_key().substr(4, 12);
  std::set<std::string> refusals;
  for (const storage::AuditEntry& e : *audit) {
    if (e.action != "tenant.delete" || e.target != "tenant/acme") continue;
    EXPECT_EQ(e.tenant_id, "acme");
    if (e.result == "OK") {
      found = true;
      EXPECT_EQ(e.actor, admin_key_id);
    } else {
      refusals.insert(e.result);
    }
  }
  EXPECT_TRUE(found);
  // The refused attempts too: the queued job, the TENANT key, the second deletion.
  EXPECT_EQ(refusals, (std::set<std::string>{"FAILED_PRECONDITION", "PERMISSION_DENIED", "NOT_FOUND"}));

  // The id can be used again; the new tenant starts from nothing (version 1 is new content).
  const std::string acme2 = server.CreateTenant("acme");
  ASSERT_TRUE(Generate(server, acme2, "acme", &g).ok());
  EXPECT_EQ(g.expert_version(), 0);
  ASSERT_EQ(PublishScaledVersion(server.registry(), "acme", {{2, 3}}, 0.5f), 1);
  v1::PromoteRequest pr;
  pr.set_tenant_id("acme");
  pr.set_version(1);
  v1::LiveVersionResponse lr;
  ASSERT_TRUE(server.Admin()->Promote(Ctx(server.admin_key()).get(), pr, &lr).ok());
  ASSERT_TRUE(Generate(server, acme2, "acme", &g).ok());
  EXPECT_EQ(g.expert_version(), 1);
}

TEST(TenantDeleteTest, RunningJobIsCancelledByForceAndNothingIsPublishedAfterwards) {
  TestServerOptions o = WithModel();
  o.training = true;
  TestServer server(o);
  const std::string acme = server.CreateTenant("acme");
  v1::Dataset ds;
  ASSERT_TRUE(server.Upload(acme, "acme", "add", AdditionJsonl(32), &ds).ok());
  v1::CreateJobRequest jreq;
  jreq.set_tenant_id("acme");
  jreq.set_training_dataset_id(ds.dataset_id());
  jreq.mutable_hyperparameters()->set_max_steps(100000);  // runs until cancelled
  v1::Job job;
  ASSERT_TRUE(server.FineTuning()->CreateJob(Ctx(acme).get(), jreq, &job).ok());
  for (int i = 0; i < 600; ++i) {
    if (server.registry().GetJob("acme", job.job_id()).value().state == storage::JobState::kRunning) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ(server.registry().GetJob("acme", job.job_id()).value().state, storage::JobState::kRunning);
  v1::DeleteTenantRequest del;
  del.set_tenant_id("acme");
  v1::DeleteTenantResponse resp;
  EXPECT_EQ(server.Admin()->DeleteTenant(Ctx(server.admin_key()).get(), del, &resp).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  del.set_force(true);
  grpc::Status st = server.Admin()->DeleteTenant(Ctx(server.admin_key()).get(), del, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.jobs_cancelled(), 1);
  v1::RuntimeStatus rs;  // the trainer stopped it before the rows went
  ASSERT_TRUE(server.Admin()->GetRuntimeStatus(Ctx(server.admin_key()).get(), {}, &rs).ok());
  EXPECT_EQ(rs.running_job_ids_size(), 0);
  EXPECT_EQ(server.registry().GetTenant("acme").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tessera::services::testing
