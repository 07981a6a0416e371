// Admin.ListAuditEvents through a real server: successful mutations recorded with actor key id, tenant,
// action, object and result OK; refused mutations of authenticated callers recorded with their code
// (another tenant, a missing scope, a TENANT key on the Admin service, a failed precondition);
// unauthenticated attempts not recorded; filters (tenant, actor, action prefix, time) and pagination;
// and CreateJob's idempotency key reused with different parameters -> FAILED_PRECONDITION naming the field.
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

std::string KeyId(const std::string& secret) { return secret.substr(4, 12); }

std::vector<v1::AuditEvent> List(TestServer& server, v1::ListAuditEventsRequest req) {
  v1::ListAuditEventsResponse resp;
  grpc::Status st = server.Admin()->ListAuditEvents(Ctx(server.admin_key()).get(), req, &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return {resp.events().begin(), resp.events().end()};
}

const v1::AuditEvent* Find(const std::vector<v1::AuditEvent>& events, const std::string& action,
                           const std::string& result) {
  for (const v1::AuditEvent& e : events) {
    if (e.action() == action && e.result() == result) return &e;
  }
  return nullptr;
}

TEST(AuditTest, MutationsAndRefusalsAreRecordedAndFiltered) {
  TestServer server;
  const absl::Time t0 = absl::Now();
  const std::string acme = server.CreateTenant("acme");
  const std::string beta = server.CreateTenant("beta");
  const std::string admin_id = KeyId(server.admin_key());
  v1::IssueApiKeyRequest ireq;
  ireq.set_tenant_id("acme");
  ireq.add_scopes("inference");
  v1::IssueApiKeyResponse infer;
  ASSERT_TRUE(server.Admin()->IssueApiKey(Ctx(server.admin_key()).get(), ireq, &infer).ok());
  v1::Dataset ds;
  ASSERT_TRUE(server.Upload(acme, "acme", "add", AdditionJsonl(8), &ds).ok());

  // Refusals by authenticated callers.
  v1::Dataset ignored;
  EXPECT_EQ(server.Upload(acme, "beta", "x", AdditionJsonl(2), &ignored).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);  // acme's key on beta
  EXPECT_EQ(server.Upload(infer.api_key().secret(), "acme", "x", AdditionJsonl(2), &ignored).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);  // no fine-tune scope
  v1::CreateTenantRequest ct;
  ct.set_tenant_id("gamma");
  v1::CreateTenantResponse ctr;
  EXPECT_EQ(server.Admin()->CreateTenant(Ctx(acme).get(), ct, &ctr).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);  // a TENANT key on the Admin service
  v1::PromoteRequest pr;
  pr.set_tenant_id("acme");
  pr.set_version(7);
  v1::LiveVersionResponse lr;
  EXPECT_EQ(server.Admin()->Promote(Ctx(server.admin_key()).get(), pr, &lr).error_code(), grpc::StatusCode::NOT_FOUND);
  // Not recorded: unauthenticated attempts.
  EXPECT_EQ(server.Upload("tsk_garbage", "acme", "x", AdditionJsonl(2), &ignored).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  v1::ListAuditEventsRequest all;
  all.set_page_size(1000);
  std::vector<v1::AuditEvent> events = List(server, all);
  // Successes, with actor, tenant, object.
  const v1::AuditEvent* e = Find(events, "tenant.create", "OK");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->actor(), admin_id);
  EXPECT_FALSE(e->tenant_id().empty());
  e = Find(events, "dataset.create", "OK");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->actor(), KeyId(acme));
  EXPECT_EQ(e->tenant_id(), "acme");
  EXPECT_EQ(e->object(), "dataset/" + ds.dataset_id());
  e = Find(events, "apikey.create", "OK");
  ASSERT_NE(e, nullptr);
  EXPECT_NE(e->tenant_id(), "");
  // Refusals, with the code and the message.
  int denied_uploads = 0;
  for (const v1::AuditEvent& x : events) {
    if (x.action() == "dataset.create" && x.result() == "PERMISSION_DENIED") {
      ++denied_uploads;
      if (x.actor() == KeyId(acme)) EXPECT_EQ(x.tenant_id(), "beta");
      if (x.actor() == infer.api_key().key_id()) EXPECT_NE(x.detail().find("fine-tune"), std::string::npos);
    }
  }
  EXPECT_EQ(denied_uploads, 2);
  e = Find(events, "tenant.create", "PERMISSION_DENIED");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->actor(), KeyId(acme));
  EXPECT_EQ(e->object(), "tenant/gamma");
  e = Find(events, "version.promote", "NOT_FOUND");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->object(), "tenant/acme/version/7");
  for (const v1::AuditEvent& x : events) EXPECT_NE(x.actor(), "garbage");
  // Newest first, ids decreasing.
  for (size_t i = 1; i < events.size(); ++i) EXPECT_GT(events[i - 1].id(), events[i].id());

  // Filters.
  v1::ListAuditEventsRequest q;
  q.set_tenant_id("beta");
  for (const v1::AuditEvent& x : List(server, q)) EXPECT_EQ(x.tenant_id(), "beta");
  q.Clear();
  q.set_actor(KeyId(acme));
  std::vector<v1::AuditEvent> by_acme = List(server, q);
  EXPECT_GE(by_acme.size(), 3u);
  for (const v1::AuditEvent& x : by_acme) EXPECT_EQ(x.actor(), KeyId(acme));
  q.Clear();
  q.set_action("dataset.");
  std::vector<v1::AuditEvent> datasets = List(server, q);
  EXPECT_EQ(datasets.size(), 3u);
  for (const v1::AuditEvent& x : datasets) EXPECT_EQ(x.action(), "dataset.create");
  q.set_action("dataset");
  EXPECT_TRUE(List(server, q).empty());  // exact unless it ends in '.' or '*'
  q.Clear();
  q.mutable_since()->set_seconds(absl::ToUnixSeconds(absl::Now()) + 3600);
  EXPECT_TRUE(List(server, q).empty());
  q.Clear();
  q.mutable_until()->set_seconds(absl::ToUnixSeconds(t0) - 3600);
  EXPECT_TRUE(List(server, q).empty());

  // Pagination: pages of 2 cover everything once.
  std::vector<int64_t> ids;
  std::string token;
  do {
    v1::ListAuditEventsRequest page;
    page.set_page_size(2);
    page.set_page_token(token);
    v1::ListAuditEventsResponse resp;
    ASSERT_TRUE(server.Admin()->ListAuditEvents(Ctx(server.admin_key()).get(), page, &resp).ok());
    EXPECT_LE(resp.events_size(), 2);
    for (const v1::AuditEvent& x : resp.events()) ids.push_back(x.id());
    token = resp.next_page_token();
  } while (!token.empty());
  EXPECT_EQ(ids.size(), events.size());
  v1::ListAuditEventsRequest bad;
  bad.set_page_token("not-a-token");
  v1::ListAuditEventsResponse resp;
  grpc::Status st = server.Admin()->ListAuditEvents(Ctx(server.admin_key()).get(), bad, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("page_token"), std::string::npos);
  EXPECT_EQ(server.Admin()->ListAuditEvents(Ctx(acme).get(), {}, &resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST(AuditTest, IdempotencyKeyReusedWithDifferentParametersNamesTheField) {
  TestServer server;
  const std::string key = server.CreateTenant("acme");
  v1::Dataset ds, other;
  ASSERT_TRUE(server.Upload(key, "acme", "d", AdditionJsonl(8), &ds).ok());
  ASSERT_TRUE(server.Upload(key, "acme", "e", AdditionJsonl(8, /*seed=*/2), &other).ok());
  auto ft = server.FineTuning();
  v1::CreateJobRequest req;
  req.set_tenant_id("acme");
  req.set_training_dataset_id(ds.dataset_id());
  req.mutable_hyperparameters()->set_max_steps(4);
  req.set_idempotency_key("nightly-42");
  v1::Job a, b;
  ASSERT_TRUE(ft->CreateJob(Ctx(key).get(), req, &a).ok());
  ASSERT_TRUE(ft->CreateJob(Ctx(key).get(), req, &b).ok());  // the same request: the same job
  EXPECT_EQ(a.job_id(), b.job_id());

  struct Case {
    std::function<void(v1::CreateJobRequest*)> mutate;
    std::string field;
  };
  std::vector<Case> cases = {
      {[](auto* r) { r->mutable_hyperparameters()->set_max_steps(5); }, "hyperparameters.max_steps"},
      {[&](auto* r) { r->set_training_dataset_id(other.dataset_id()); }, "training_dataset_id"},
      {[](auto* r) { r->mutable_hyperparameters()->set_learning_rate(0.1); }, "hyperparameters.learning_rate"},
      {[&](auto* r) { r->set_validation_dataset_id(other.dataset_id()); }, "validation_dataset_id"},
  };
  for (const Case& c : cases) {
    v1::CreateJobRequest r = req;
    c.mutate(&r);
    v1::Job j;
    grpc::Status st = ft->CreateJob(Ctx(key).get(), r, &j);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << c.field << ": " << st.error_message();
    EXPECT_NE(st.error_message().find(c.field), std::string::npos) << st.error_message();
    EXPECT_NE(st.error_message().find(a.job_id()), std::string::npos) << st.error_message();
  }
  // The refusal is audited; another key creates another job.
  v1::ListAuditEventsRequest q;
  q.set_action("job.create");
  v1::ListAuditEventsResponse resp;
  ASSERT_TRUE(server.Admin()->ListAuditEvents(Ctx(server.admin_key()).get(), q, &resp).ok());
  int refused = 0;
  for (const v1::AuditEvent& e : resp.events()) refused += e.result() == "FAILED_PRECONDITION";
  EXPECT_EQ(refused, static_cast<int>(cases.size()));
  v1::CreateJobRequest fresh = req;
  fresh.set_idempotency_key("nightly-43");
  fresh.mutable_hyperparameters()->set_max_steps(5);
  v1::Job c;
  ASSERT_TRUE(ft->CreateJob(Ctx(key).get(), fresh, &c).ok());
  EXPECT_NE(c.job_id(), a.job_id());
}

}  // namespace
}  // namespace tessera::services::testing
