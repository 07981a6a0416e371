// The isolation matrix: every tenant-facing RPC with tenant A's key on tenant B's objects. Naming B as
// the tenant -> PERMISSION_DENIED; naming A but B's object ids -> NOT_FOUND. B's names and ids never
// appear in any error text.
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

constexpr char kSecretTenant[] = "globex-secret";

class IsolationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_key_ = server_.CreateTenant("acme");
    b_key_ = server_.CreateTenant(kSecretTenant);
    v1::Dataset ds;
    ASSERT_TRUE(server_.Upload(b_key_, kSecretTenant, "globex-private-dataset", AdditionJsonl(8), &ds).ok());
    b_dataset_ = ds.dataset_id();
    v1::CreateJobRequest req;
    req.set_tenant_id(kSecretTenant);
    req.set_training_dataset_id(b_dataset_);
    v1::Job job;
    ASSERT_TRUE(server_.FineTuning()->CreateJob(Ctx(b_key_).get(), req, &job).ok());
    b_job_ = job.job_id();
    b_version_ = PublishScaledVersion(server_.registry(), kSecretTenant, {{0, 0}}, 2.0f);
  }

  void ExpectIsolated(const grpc::Status& st, grpc::StatusCode code, const std::string& what) {
    EXPECT_EQ(st.error_code(), code) << what << ": " << st.error_message();
    // The caller's own input (an id it sent) may be echoed; B's tenant name never appears, and an
    // error about B's object reads exactly like one about an object that does not exist at all.
    EXPECT_EQ(st.error_message().find("globex"), std::string::npos) << what << " leaks: " << st.error_message();
    std::string normalized = st.error_message();
    for (const std::string& id : {b_dataset_, b_job_}) {
      for (size_t p = normalized.find(id); p != std::string::npos; p = normalized.find(id)) {
        normalized.replace(p, id.size(), id.substr(0, id.find('_') + 1) + "X");
      }
    }
    last_normalized_ = normalized;
  }

  TestServer server_{WithModel()};
  std::string a_key_, b_key_, b_dataset_, b_job_;
  std::string last_normalized_;  // the last error text with B's ids replaced by "ds_X" / "job_X"
  int64_t b_version_ = 0;
};

TEST_F(IsolationTest, NamingAnotherTenantIsPermissionDenied) {
  const auto denied = grpc::StatusCode::PERMISSION_DENIED;
  const std::string b = kSecretTenant;
  {
    v1::GetDatasetRequest r;
    r.set_tenant_id(b);
    r.set_dataset_id(b_dataset_);
    v1::Dataset out;
    ExpectIsolated(server_.Datasets()->GetDataset(Ctx(a_key_).get(), r, &out), denied, "GetDataset");
  }
  {
    v1::ListDatasetsRequest r;
    r.set_tenant_id(b);
    v1::ListDatasetsResponse out;
    ExpectIsolated(server_.Datasets()->ListDatasets(Ctx(a_key_).get(), r, &out), denied, "ListDatasets");
  }
  {
    v1::DeleteDatasetRequest r;
    r.set_tenant_id(b);
    r.set_dataset_id(b_dataset_);
    v1::DeleteDatasetResponse out;
    ExpectIsolated(server_.Datasets()->DeleteDataset(Ctx(a_key_).get(), r, &out), denied, "DeleteDataset");
  }
  {
    v1::Dataset out;
    ExpectIsolated(server_.Upload(a_key_, b, "x", AdditionJsonl(2), &out), denied, "UploadDataset");
  }
  {
    v1::CreateJobRequest r;
    r.set_tenant_id(b);
    r.set_training_dataset_id(b_dataset_);
    v1::Job out;
    ExpectIsolated(server_.FineTuning()->CreateJob(Ctx(a_key_).get(), r, &out), denied, "CreateJob");
  }
  {
    v1::GetJobRequest r;
    r.set_tenant_id(b);
    r.set_job_id(b_job_);
    v1::Job out;
    ExpectIsolated(server_.FineTuning()->GetJob(Ctx(a_key_).get(), r, &out), denied, "GetJob");
  }
  {
    v1::ListJobsRequest r;
    r.set_tenant_id(b);
    v1::ListJobsResponse out;
    ExpectIsolated(server_.FineTuning()->ListJobs(Ctx(a_key_).get(), r, &out), denied, "ListJobs");
  }
  {
    v1::CancelJobRequest r;
    r.set_tenant_id(b);
    r.set_job_id(b_job_);
    v1::Job out;
    ExpectIsolated(server_.FineTuning()->CancelJob(Ctx(a_key_).get(), r, &out), denied, "CancelJob");
  }
  {
    auto stub = server_.FineTuning();
    auto ctx = Ctx(a_key_);
    v1::WatchJobRequest r;
    r.set_tenant_id(b);
    r.set_job_id(b_job_);
    auto reader = stub->WatchJob(ctx.get(), r);
    v1::JobEvent e;
    EXPECT_FALSE(reader->Read(&e));
    ExpectIsolated(reader->Finish(), denied, "WatchJob");
  }
  {
    v1::ListVersionsRequest r;
    r.set_tenant_id(b);
    v1::ListVersionsResponse out;
    ExpectIsolated(server_.Experts()->ListVersions(Ctx(a_key_).get(), r, &out), denied, "ListVersions");
  }
  {
    v1::GetVersionRequest r;
    r.set_tenant_id(b);
    r.set_version(b_version_);
    v1::ExpertVersion out;
    ExpectIsolated(server_.Experts()->GetVersion(Ctx(a_key_).get(), r, &out), denied, "GetVersion");
  }
  {
    v1::GenerateRequest r;
    r.set_tenant_id(b);
    r.set_prompt("hi");
    r.set_max_tokens(2);
    v1::GenerateResponse out;
    ExpectIsolated(server_.Inference()->Generate(Ctx(a_key_).get(), r, &out), denied, "Generate");
    auto stub = server_.Inference();
    auto ctx = Ctx(a_key_);
    auto reader = stub->GenerateStream(ctx.get(), r);
    v1::GenerateChunk c;
    EXPECT_FALSE(reader->Read(&c));
    ExpectIsolated(reader->Finish(), denied, "GenerateStream");
  }
  {
    v1::ScoreRequest r;
    r.set_tenant_id(b);
    r.set_text("hi");
    v1::ScoreResponse out;
    ExpectIsolated(server_.Inference()->Score(Ctx(a_key_).get(), r, &out), denied, "Score");
  }
}

TEST_F(IsolationTest, AnotherTenantsObjectIdsAreNotFoundUnderOwnTenant) {
  const auto not_found = grpc::StatusCode::NOT_FOUND;
  {
    v1::GetDatasetRequest r;
    r.set_tenant_id("acme");
    r.set_dataset_id(b_dataset_);
    v1::Dataset out;
    ExpectIsolated(server_.Datasets()->GetDataset(Ctx(a_key_).get(), r, &out), not_found, "GetDataset");
  }
  {
    v1::DeleteDatasetRequest r;
    r.set_tenant_id("acme");
    r.set_dataset_id(b_dataset_);
    v1::DeleteDatasetResponse out;
    ExpectIsolated(server_.Datasets()->DeleteDataset(Ctx(a_key_).get(), r, &out), not_found, "DeleteDataset");
  }
  {
    v1::CreateJobRequest r;
    r.set_tenant_id("acme");
    r.set_training_dataset_id(b_dataset_);
    v1::Job out;
    ExpectIsolated(server_.FineTuning()->CreateJob(Ctx(a_key_).get(), r, &out), not_found, "CreateJob");
  }
  {
    v1::GetJobRequest r;
    r.set_tenant_id("acme");
    r.set_job_id(b_job_);
    v1::Job out;
    ExpectIsolated(server_.FineTuning()->GetJob(Ctx(a_key_).get(), r, &out), not_found, "GetJob");
  }
  {
    v1::CancelJobRequest r;
    r.set_tenant_id("acme");
    r.set_job_id(b_job_);
    v1::Job out;
    ExpectIsolated(server_.FineTuning()->CancelJob(Ctx(a_key_).get(), r, &out), not_found, "CancelJob");
  }
  {
    auto stub = server_.FineTuning();
    auto ctx = Ctx(a_key_);
    v1::WatchJobRequest r;
    r.set_tenant_id("acme");
    r.set_job_id(b_job_);
    auto reader = stub->WatchJob(ctx.get(), r);
    v1::JobEvent e;
    EXPECT_FALSE(reader->Read(&e));
    ExpectIsolated(reader->Finish(), not_found, "WatchJob");
  }
  {
    v1::GetVersionRequest r;
    r.set_tenant_id("acme");
    r.set_version(b_version_);  // acme has no versions: B's version 1 is not acme's
    v1::ExpertVersion out;
    ExpectIsolated(server_.Experts()->GetVersion(Ctx(a_key_).get(), r, &out), not_found, "GetVersion");
  }
  {
    v1::GenerateRequest r;
    r.set_tenant_id("acme");
    r.set_prompt("hi");
    r.set_max_tokens(2);
    r.set_version(b_version_);
    v1::GenerateResponse out;
    ExpectIsolated(server_.Inference()->Generate(Ctx(a_key_).get(), r, &out), not_found, "Generate pinned");
    v1::ScoreRequest s;
    s.set_tenant_id("acme");
    s.set_text("hi");
    s.set_version(b_version_);
    v1::ScoreResponse sout;
    ExpectIsolated(server_.Inference()->Score(Ctx(a_key_).get(), s, &sout), not_found, "Score pinned");
  }
  // B's ids are indistinguishable from ids that exist nowhere.
  {
    v1::GetJobRequest r;
    r.set_tenant_id("acme");
    r.set_job_id(b_job_);
    v1::Job out;
    ExpectIsolated(server_.FineTuning()->GetJob(Ctx(a_key_).get(), r, &out), not_found, "GetJob");
    std::string for_b = last_normalized_;
    r.set_job_id("job_X");
    grpc::Status st = server_.FineTuning()->GetJob(Ctx(a_key_).get(), r, &out);
    EXPECT_EQ(st.error_message(), for_b);
    v1::GetDatasetRequest d;
    d.set_tenant_id("acme");
    d.set_dataset_id(b_dataset_);
    v1::Dataset dout;
    ExpectIsolated(server_.Datasets()->GetDataset(Ctx(a_key_).get(), d, &dout), not_found, "GetDataset");
    for_b = last_normalized_;
    d.set_dataset_id("ds_X");
    st = server_.Datasets()->GetDataset(Ctx(a_key_).get(), d, &dout);
    EXPECT_EQ(st.error_message(), for_b);
  }
  // Lists under the own tenant show nothing of B.
  v1::ListJobsRequest lj;
  lj.set_tenant_id("acme");
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(server_.FineTuning()->ListJobs(Ctx(a_key_).get(), lj, &jobs).ok());
  EXPECT_EQ(jobs.jobs_size(), 0);
  v1::ListDatasetsRequest ld;
  ld.set_tenant_id("acme");
  v1::ListDatasetsResponse dss;
  ASSERT_TRUE(server_.Datasets()->ListDatasets(Ctx(a_key_).get(), ld, &dss).ok());
  EXPECT_EQ(dss.datasets_size(), 0);
  v1::ListVersionsRequest lv;
  lv.set_tenant_id("acme");
  v1::ListVersionsResponse vs;
  ASSERT_TRUE(server_.Experts()->ListVersions(Ctx(a_key_).get(), lv, &vs).ok());
  EXPECT_EQ(vs.versions_size(), 0);
}

}  // namespace
}  // namespace tessera::services::testing
