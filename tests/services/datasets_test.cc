// The Datasets service: streamed upload with full validation (line-numbered errors), the size limit,
// token counts with the byte tokenizer, get/list/delete, and delete refused while a job uses it.
#include "gtest/gtest.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

class DatasetsTest : public ::testing::Test {
 protected:
  TestServer server_;
  std::string key_ = server_.CreateTenant("acme");
};

TEST_F(DatasetsTest, UploadCountsExamplesAndTokens) {
  // Byte tokenizer: BOS + bytes + EOS per example.
  std::string jsonl = "{\"text\": \"hello\"}\n\n{\"prompt\": \"ab\", \"completion\": \"c\"}\n";
  v1::Dataset ds;
  grpc::Status st = server_.Upload(key_, "acme", "tiny", jsonl, &ds, /*chunk=*/7);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(ds.tenant_id(), "acme");
  EXPECT_EQ(ds.name(), "tiny");
  EXPECT_EQ(ds.format(), "jsonl");
  EXPECT_EQ(ds.num_examples(), 2);
  EXPECT_EQ(ds.num_tokens(), (5 + 2) + (3 + 2));
  EXPECT_EQ(ds.size_bytes(), static_cast<int64_t>(jsonl.size()));
  EXPECT_EQ(ds.sha256().size(), 64u);
  EXPECT_EQ(ds.dataset_id().rfind("ds_", 0), 0u);
  EXPECT_TRUE(ds.has_created_at());
  absl::StatusOr<std::string> stored = server_.registry().blobs().Get(ds.sha256());
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(*stored, jsonl);

  v1::GetDatasetRequest g;
  g.set_tenant_id("acme");
  g.set_dataset_id(ds.dataset_id());
  v1::Dataset got;
  ASSERT_TRUE(server_.Datasets()->GetDataset(Ctx(key_).get(), g, &got).ok());
  EXPECT_EQ(got.sha256(), ds.sha256());
  v1::ListDatasetsRequest l;
  l.set_tenant_id("acme");
  v1::ListDatasetsResponse list;
  ASSERT_TRUE(server_.Datasets()->ListDatasets(Ctx(key_).get(), l, &list).ok());
  ASSERT_EQ(list.datasets_size(), 1);
}

TEST_F(DatasetsTest, BadLinesAreRejectedWithTheirNumberAndNothingIsStored) {
  struct Case {
    std::string jsonl;
    std::string expect;
  };
  std::vector<Case> cases = {
      {"{\"text\": \"ok\"}\n{\"text\": \"ok\"\n", "line 2"},
      {"{\"text\": \"ok\"}\n{\"text\": \"ok\"}\n[1,2]\n", "line 3"},
      {"{\"prompt\": \"a\"}\n", "line 1"},
      {"{\"text\": 5}\n", "line 1"},
      {"{\"text\": \"a\", \"extra\": 1}\n", "line 1"},
      {"", "example"},
  };
  for (const Case& c : cases) {
    v1::Dataset ds;
    grpc::Status st = server_.Upload(key_, "acme", "bad", c.jsonl, &ds);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.jsonl;
    EXPECT_NE(st.error_message().find(c.expect), std::string::npos) << st.error_message();
  }
  v1::ListDatasetsRequest l;
  l.set_tenant_id("acme");
  v1::ListDatasetsResponse list;
  ASSERT_TRUE(server_.Datasets()->ListDatasets(Ctx(key_).get(), l, &list).ok());
  EXPECT_EQ(list.datasets_size(), 0);
}

TEST_F(DatasetsTest, UploadProtocolErrors) {
  v1::Dataset ds;
  // Size limit (1 MiB in the test server).
  std::string big;
  while (big.size() <= (1u << 20)) big += "{\"text\": \"" + std::string(1000, 'x') + "\"}\n";
  grpc::Status st = server_.Upload(key_, "acme", "big", big, &ds, 64 << 10);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(st.error_message().find("limit"), std::string::npos);
  // Missing name.
  st = server_.Upload(key_, "acme", "", AdditionJsonl(2), &ds);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("name"), std::string::npos);
  // Unsupported format.
  {
    auto ctx = Ctx(key_);
    auto stub = server_.Datasets();
    auto w = stub->UploadDataset(ctx.get(), &ds);
    v1::UploadDatasetRequest r;
    r.set_tenant_id("acme");
    r.set_name("x");
    r.set_format("csv");
    w->Write(r);
    w->WritesDone();
    st = w->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(st.error_message().find("format"), std::string::npos);
  }
  // An empty stream.
  {
    auto ctx = Ctx(key_);
    auto stub = server_.Datasets();
    auto w = stub->UploadDataset(ctx.get(), &ds);
    w->WritesDone();
    EXPECT_EQ(w->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
}

TEST_F(DatasetsTest, DeleteIsRefusedWhileAQueuedJobUsesIt) {
  v1::Dataset ds;
  ASSERT_TRUE(server_.Upload(key_, "acme", "d", AdditionJsonl(8), &ds).ok());
  v1::CreateJobRequest req;
  req.set_tenant_id("acme");
  req.set_training_dataset_id(ds.dataset_id());
  v1::Job job;
  ASSERT_TRUE(server_.FineTuning()->CreateJob(Ctx(key_).get(), req, &job).ok());

  v1::DeleteDatasetRequest d;
  d.set_tenant_id("acme");
  d.set_dataset_id(ds.dataset_id());
  v1::DeleteDatasetResponse dresp;
  grpc::Status st = server_.Datasets()->DeleteDataset(Ctx(key_).get(), d, &dresp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  v1::CancelJobRequest c;
  c.set_tenant_id("acme");
  c.set_job_id(job.job_id());
  ASSERT_TRUE(server_.FineTuning()->CancelJob(Ctx(key_).get(), c, &job).ok());
  ASSERT_TRUE(server_.Datasets()->DeleteDataset(Ctx(key_).get(), d, &dresp).ok());
  v1::GetDatasetRequest g;
  g.set_tenant_id("acme");
  g.set_dataset_id(ds.dataset_id());
  v1::Dataset got;
  EXPECT_EQ(server_.Datasets()->GetDataset(Ctx(key_).get(), g, &got).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(server_.Datasets()->DeleteDataset(Ctx(key_).get(), d, &dresp).error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace tessera::services::testing
