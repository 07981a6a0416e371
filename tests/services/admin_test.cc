// The Admin service through a real server: tenants, keys, versions, promote/rollback, runtime status,
// jobs across tenants; error codes and messages; every mutation in the audit log.
#include "core/backend/cpu/cpu_kernel_set.h"
#include "gtest/gtest.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

class AdminTest : public ::testing::Test {
 protected:
  TestServer server_;
  std::unique_ptr<v1::Admin::Stub> admin_ = server_.Admin();
  std::string admin_key_ = server_.admin_key();
};

TEST_F(AdminTest, CreateAndListTenants) {
  v1::CreateTenantRequest req;
  req.set_tenant_id("acme");
  req.set_display_name("ACME Corp");
  v1::CreateTenantResponse resp;
  ASSERT_TRUE(admin_->CreateTenant(Ctx(admin_key_).get(), req, &resp).ok());
  EXPECT_EQ(resp.tenant().tenant_id(), "acme");
  EXPECT_EQ(resp.tenant().display_name(), "ACME Corp");
  EXPECT_EQ(resp.api_key().tenant_id(), "acme");
  EXPECT_EQ(resp.api_key().role(), v1::TENANT);
  EXPECT_FALSE(resp.api_key().secret().empty());
  EXPECT_TRUE(resp.tenant().has_created_at());

  grpc::Status st = admin_->CreateTenant(Ctx(admin_key_).get(), req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_NE(st.error_message().find("acme"), std::string::npos);

  req.set_tenant_id("Bad_Slug");
  st = admin_->CreateTenant(Ctx(admin_key_).get(), req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("tenant_id"), std::string::npos) << st.error_message();
  req.set_tenant_id("");
  st = admin_->CreateTenant(Ctx(admin_key_).get(), req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  server_.CreateTenant("globex");
  v1::ListTenantsResponse list;
  ASSERT_TRUE(admin_->ListTenants(Ctx(admin_key_).get(), {}, &list).ok());
  ASSERT_EQ(list.tenants_size(), 2);
  EXPECT_EQ(list.tenants(0).tenant_id(), "acme");
  EXPECT_EQ(list.tenants(1).tenant_id(), "globex");
  EXPECT_EQ(list.tenants(0).live_version(), 0);
}

TEST_F(AdminTest, IssueAndRevokeKeys) {
  server_.CreateTenant("acme");
  v1::IssueApiKeyRequest ireq;
  ireq.set_tenant_id("nobody");
  v1::IssueApiKeyResponse iresp;
  EXPECT_EQ(admin_->IssueApiKey(Ctx(admin_key_).get(), ireq, &iresp).error_code(), grpc::StatusCode::NOT_FOUND);
  ireq.set_tenant_id("acme");
  ASSERT_TRUE(admin_->IssueApiKey(Ctx(admin_key_).get(), ireq, &iresp).ok());
  EXPECT_FALSE(iresp.api_key().secret().empty());

  v1::RevokeApiKeyRequest rreq;
  v1::RevokeApiKeyResponse rresp;
  EXPECT_EQ(admin_->RevokeApiKey(Ctx(admin_key_).get(), rreq, &rresp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  rreq.set_key_id("doesnotexist");
  EXPECT_EQ(admin_->RevokeApiKey(Ctx(admin_key_).get(), rreq, &rresp).error_code(), grpc::StatusCode::NOT_FOUND);
  rreq.set_key_id(iresp.api_key().key_id());
  ASSERT_TRUE(admin_->RevokeApiKey(Ctx(admin_key_).get(), rreq, &rresp).ok());
  EXPECT_TRUE(rresp.api_key().secret().empty());  // never shown again
}

TEST_F(AdminTest, PromoteAndRollbackMoveTheLivePointer) {
  server_.CreateTenant("acme");
  int64_t v1 = PublishScaledVersion(server_.registry(), "acme", {{0, 1}}, 1.5f);
  int64_t v2 = PublishScaledVersion(server_.registry(), "acme", {{1, 2}}, 0.5f);
  ASSERT_EQ(v1, 1);
  ASSERT_EQ(v2, 2);

  v1::PromoteRequest p;
  p.set_tenant_id("acme");
  p.set_version(7);
  v1::LiveVersionResponse live;
  grpc::Status st = admin_->Promote(Ctx(admin_key_).get(), p, &live);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  p.set_version(-1);
  EXPECT_EQ(admin_->Promote(Ctx(admin_key_).get(), p, &live).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  p.set_version(1);
  ASSERT_TRUE(admin_->Promote(Ctx(admin_key_).get(), p, &live).ok());
  EXPECT_EQ(live.live_version(), 1);
  EXPECT_EQ(live.previous_version(), 0);
  EXPECT_TRUE(live.changed());
  p.set_version(2);
  ASSERT_TRUE(admin_->Promote(Ctx(admin_key_).get(), p, &live).ok());
  ASSERT_TRUE(admin_->Promote(Ctx(admin_key_).get(), p, &live).ok());
  EXPECT_FALSE(live.changed());  // already live: no-op

  v1::ListVersionsRequest lreq;
  lreq.set_tenant_id("acme");
  v1::ListVersionsResponse versions;
  ASSERT_TRUE(admin_->ListVersions(Ctx(admin_key_).get(), lreq, &versions).ok());
  ASSERT_EQ(versions.versions_size(), 2);
  EXPECT_EQ(versions.versions(0).version(), 2);  // newest first
  EXPECT_TRUE(versions.versions(0).live());
  EXPECT_FALSE(versions.versions(1).live());
  EXPECT_EQ(versions.live_version(), 2);
  EXPECT_EQ(versions.versions(0).slots_size(), 1);
  EXPECT_EQ(versions.versions(0).slots(0).layer(), 1);
  EXPECT_EQ(versions.versions(0).sha256().size(), 64u);
  EXPECT_GT(versions.versions(0).size_bytes(), 0);

  v1::RollbackRequest r;
  r.set_tenant_id("acme");
  ASSERT_TRUE(admin_->Rollback(Ctx(admin_key_).get(), r, &live).ok());
  EXPECT_EQ(live.live_version(), 1);
  EXPECT_EQ(live.previous_version(), 2);
  ASSERT_TRUE(admin_->Rollback(Ctx(admin_key_).get(), r, &live).ok());
  EXPECT_EQ(live.live_version(), 0);
  st = admin_->Rollback(Ctx(admin_key_).get(), r, &live);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_FALSE(st.error_message().empty());
  r.set_to_version(2);
  ASSERT_TRUE(admin_->Rollback(Ctx(admin_key_).get(), r, &live).ok());
  EXPECT_EQ(live.live_version(), 2);
  r.set_to_version(9);
  EXPECT_EQ(admin_->Rollback(Ctx(admin_key_).get(), r, &live).error_code(), grpc::StatusCode::NOT_FOUND);
  v1::RollbackRequest unknown;
  unknown.set_tenant_id("nobody");
  EXPECT_EQ(admin_->Rollback(Ctx(admin_key_).get(), unknown, &live).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(AdminTest, RuntimeStatusWithoutModelSaysSo) {
  v1::RuntimeStatus status;
  ASSERT_TRUE(admin_->GetRuntimeStatus(Ctx(admin_key_).get(), {}, &status).ok());
  EXPECT_EQ(status.backbone().name(), "random:tiny");
  EXPECT_EQ(status.backbone().architecture(), "qwen3_moe");
  EXPECT_EQ(status.backbone().num_layers(), 4);
  EXPECT_EQ(status.backbone().num_experts(), 16);
  EXPECT_GT(status.backbone().total_parameters(), status.backbone().expert_parameters());
  EXPECT_EQ(status.device(), "cpu");
  EXPECT_FALSE(status.inference_available());
  EXPECT_FALSE(status.training_available());
  EXPECT_EQ(status.queues().jobs_queued(), 0);
  EXPECT_TRUE(status.has_started_at());
  // The CPU kernel choice (issue 17): the probed features and the kernel set chosen from them.
  EXPECT_EQ(status.cpu_features(), cpu::CpuFeaturesString());
  EXPECT_NE(status.cpu_features().find(" family "), std::string::npos) << status.cpu_features();
  EXPECT_EQ(status.kernel_set(), cpu::CpuKernelSetString());
  EXPECT_EQ(status.kernel_set().rfind("blas=openblas:", 0), 0u) << status.kernel_set();
}

TEST_F(AdminTest, JobsAcrossTenantsAndCancel) {
  std::string acme = server_.CreateTenant("acme");
  std::string globex = server_.CreateTenant("globex");
  std::vector<std::string> job_ids;
  for (auto [tenant, key] : {std::pair{"acme", acme}, std::pair{"globex", globex}}) {
    v1::Dataset ds;
    ASSERT_TRUE(server_.Upload(key, tenant, "d", AdditionJsonl(8), &ds).ok());
    v1::CreateJobRequest req;
    req.set_tenant_id(tenant);
    req.set_training_dataset_id(ds.dataset_id());
    v1::Job job;
    ASSERT_TRUE(server_.FineTuning()->CreateJob(Ctx(key).get(), req, &job).ok());
    job_ids.push_back(job.job_id());
  }
  v1::ListJobsRequest all;
  v1::ListJobsResponse resp;
  ASSERT_TRUE(admin_->ListJobs(Ctx(admin_key_).get(), all, &resp).ok());
  ASSERT_EQ(resp.jobs_size(), 2);
  EXPECT_EQ(resp.jobs(0).job_id(), job_ids[1]);  // newest first
  all.set_tenant_id("acme");
  ASSERT_TRUE(admin_->ListJobs(Ctx(admin_key_).get(), all, &resp).ok());
  ASSERT_EQ(resp.jobs_size(), 1);
  EXPECT_EQ(resp.jobs(0).tenant_id(), "acme");

  v1::CancelJobRequest c;
  c.set_job_id(job_ids[1]);
  v1::Job job;
  ASSERT_TRUE(admin_->CancelJob(Ctx(admin_key_).get(), c, &job).ok());
  EXPECT_EQ(job.state(), v1::CANCELLED);
  grpc::Status st = admin_->CancelJob(Ctx(admin_key_).get(), c, &job);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  c.set_job_id("job_missing");
  EXPECT_EQ(admin_->CancelJob(Ctx(admin_key_).get(), c, &job).error_code(), grpc::StatusCode::NOT_FOUND);

  v1::RuntimeStatus status;
  ASSERT_TRUE(admin_->GetRuntimeStatus(Ctx(admin_key_).get(), {}, &status).ok());
  EXPECT_EQ(status.queues().jobs_queued(), 1);
}

TEST_F(AdminTest, EveryMutationIsAudited) {
  std::string acme = server_.CreateTenant("acme");
  v1::IssueApiKeyRequest ireq;
  ireq.set_tenant_id("acme");
  v1::IssueApiKeyResponse iresp;
  ASSERT_TRUE(admin_->IssueApiKey(Ctx(admin_key_).get(), ireq, &iresp).ok());
  v1::Dataset ds;
  ASSERT_TRUE(server_.Upload(acme, "acme", "d", AdditionJsonl(4), &ds).ok());
  PublishScaledVersion(server_.registry(), "acme", {{0, 0}}, 2.0f);
  v1::PromoteRequest p;
  p.set_tenant_id("acme");
  p.set_version(1);
  v1::LiveVersionResponse live;
  ASSERT_TRUE(admin_->Promote(Ctx(admin_key_).get(), p, &live).ok());

  absl::StatusOr<std::vector<storage::AuditEntry>> audit = server_.registry().ListAudit(0);
  ASSERT_TRUE(audit.ok());
  std::string admin_key_id = server_.admin_key().substr(4, 12);
  auto has = [&](const std::string& action_part, const std::string& actor) {
    for (const storage::AuditEntry& e : *audit) {
      if (e.action.find(action_part) != std::string::npos && e.actor == actor) return true;
    }
    return false;
  };
  EXPECT_TRUE(has("tenant", admin_key_id));
  EXPECT_TRUE(has("key", admin_key_id));
  EXPECT_TRUE(has("promote", admin_key_id));
  std::string acme_key_id = acme.substr(4, 12);
  EXPECT_TRUE(has("dataset", acme_key_id));
}

}  // namespace
}  // namespace tessera::services::testing
