// API key lifecycle through a real server: Admin.ListApiKeys (every field, never the secret), scopes
// (an inference-only key generates but is refused datasets and jobs naming the missing scope), expiry,
// rotation with and without a grace period, and revocation by another process taking effect within
// the auth cache's second.
#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

v1::IssueApiKeyResponse Issue(TestServer& server, const v1::IssueApiKeyRequest& req) {
  v1::IssueApiKeyResponse resp;
  grpc::Status st = server.Admin()->IssueApiKey(Ctx(server.admin_key()).get(), req, &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return resp;
}

grpc::Status ListDatasets(TestServer& server, const std::string& key) {
  v1::ListDatasetsRequest req;
  req.set_tenant_id("acme");
  v1::ListDatasetsResponse resp;
  return server.Datasets()->ListDatasets(Ctx(key).get(), req, &resp);
}

// Timing rules, not timings: a call that returned before `t` was authenticated before `t`, and one sent
// after `t` (on the clock the server reads too) is authenticated after it. The helpers below assert only
// that, so a slow or busy machine changes how many calls are checked, never the outcome.

// Calls ListDatasets with `key` until `until`; every call that returned before `until` must have been
// accepted. Returns how many were.
int ExpectAcceptedUntil(TestServer& server, const std::string& key, absl::Time until) {
  int accepted = 0;
  for (;;) {
    grpc::Status st = ListDatasets(server, key);
    if (absl::Now() >= until) return accepted;
    EXPECT_TRUE(st.ok()) << st.error_message();
    accepted += st.ok() ? 1 : 0;
    absl::SleepFor(absl::Milliseconds(20));
  }
}

// Waits until `from` has passed, then one call with `key` must be refused.
void ExpectRefusedAfter(TestServer& server, const std::string& key, absl::Time from) {
  while (absl::Now() <= from) absl::SleepFor(std::min(absl::Milliseconds(20), from - absl::Now() + absl::Microseconds(1)));
  grpc::Status st = ListDatasets(server, key);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
}

TEST(KeysTest, ListApiKeysShowsMetadataButNeverTheSecret) {
  TestServer server;
  std::string first = server.CreateTenant("acme");
  server.CreateTenant("beta");
  v1::IssueApiKeyRequest ireq;
  ireq.set_tenant_id("acme");
  ireq.add_scopes("inference");
  ireq.set_ttl_seconds(3600);
  v1::IssueApiKeyResponse issued = Issue(server, ireq);
  ASSERT_FALSE(issued.api_key().secret().empty());
  ASSERT_TRUE(ListDatasets(server, first).ok());  // a use: last_used_at is recorded

  v1::ListApiKeysRequest req;
  req.set_tenant_id("acme");
  v1::ListApiKeysResponse resp;
  ASSERT_TRUE(server.Admin()->ListApiKeys(Ctx(server.admin_key()).get(), req, &resp).ok());
  ASSERT_EQ(resp.api_keys_size(), 2);
  const v1::ApiKey& a = resp.api_keys(0);  // oldest first: the tenant's first key
  const v1::ApiKey& b = resp.api_keys(1);
  EXPECT_EQ(a.tenant_id(), "acme");
  EXPECT_EQ(a.role(), v1::TENANT);
  EXPECT_EQ(std::vector<std::string>(a.scopes().begin(), a.scopes().end()),
            (std::vector<std::string>{"inference", "fine-tune", "read"}));
  EXPECT_TRUE(a.has_created_at());
  EXPECT_TRUE(a.has_last_used_at());
  EXPECT_FALSE(a.has_expires_at());
  EXPECT_EQ(b.key_id(), issued.api_key().key_id());
  EXPECT_EQ(std::vector<std::string>(b.scopes().begin(), b.scopes().end()), std::vector<std::string>{"inference"});
  EXPECT_NEAR(b.expires_at().seconds() - b.created_at().seconds(), 3600, 1);
  EXPECT_FALSE(b.has_last_used_at());
  for (const v1::ApiKey& k : resp.api_keys()) {
    EXPECT_TRUE(k.secret().empty());
    // Nothing of the secret anywhere in the message (not even its random part).
    EXPECT_EQ(k.DebugString().find(issued.api_key().secret().substr(17)), std::string::npos);
  }

  // Empty tenant: every key, the ADMIN one included; unknown tenant NOT_FOUND; TENANT key refused.
  req.set_tenant_id("");
  ASSERT_TRUE(server.Admin()->ListApiKeys(Ctx(server.admin_key()).get(), req, &resp).ok());
  EXPECT_EQ(resp.api_keys_size(), 4);
  req.set_tenant_id("ghost");
  EXPECT_EQ(server.Admin()->ListApiKeys(Ctx(server.admin_key()).get(), req, &resp).error_code(),
            grpc::StatusCode::NOT_FOUND);
  req.set_tenant_id("acme");
  EXPECT_EQ(server.Admin()->ListApiKeys(Ctx(first).get(), req, &resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST(KeysTest, InferenceOnlyKeyGeneratesButIsRefusedDatasetsAndJobs) {
  TestServer server(WithModel());
  server.CreateTenant("acme");
  v1::IssueApiKeyRequest ireq;
  ireq.set_tenant_id("acme");
  ireq.add_scopes("inference");
  std::string infer = Issue(server, ireq).api_key().secret();

  v1::GenerateRequest g;
  g.set_tenant_id("acme");
  g.set_prompt("add(2,3)=");
  g.set_max_tokens(2);
  v1::GenerateResponse gr;
  grpc::Status st = server.Inference()->Generate(Ctx(infer).get(), g, &gr);
  EXPECT_TRUE(st.ok()) << st.error_message();
  v1::ScoreRequest sreq;
  sreq.set_tenant_id("acme");
  sreq.set_text("add(2,3)=5");
  v1::ScoreResponse sresp;
  st = server.Inference()->Score(Ctx(infer).get(), sreq, &sresp);
  EXPECT_TRUE(st.ok()) << st.error_message();

  st = ListDatasets(server, infer);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(st.error_message().find("\"read\""), std::string::npos) << st.error_message();
  v1::Dataset ds;
  st = server.Upload(infer, "acme", "add", AdditionJsonl(4), &ds);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(st.error_message().find("\"fine-tune\""), std::string::npos) << st.error_message();
  v1::CreateJobRequest job;
  job.set_tenant_id("acme");
  job.set_training_dataset_id("ds_whatever");
  v1::Job jr;
  st = server.FineTuning()->CreateJob(Ctx(infer).get(), job, &jr);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(st.error_message().find("\"fine-tune\""), std::string::npos) << st.error_message();
  v1::ListJobsRequest lj;
  lj.set_tenant_id("acme");
  v1::ListJobsResponse ljr;
  st = server.FineTuning()->ListJobs(Ctx(infer).get(), lj, &ljr);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  v1::ListVersionsRequest lv;
  lv.set_tenant_id("acme");
  v1::ListVersionsResponse lvr;
  EXPECT_EQ(server.Experts()->ListVersions(Ctx(infer).get(), lv, &lvr).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);

  // A read-only key reads but cannot upload nor generate.
  ireq.clear_scopes();
  ireq.add_scopes("read");
  std::string reader = Issue(server, ireq).api_key().secret();
  EXPECT_TRUE(ListDatasets(server, reader).ok());
  EXPECT_TRUE(server.FineTuning()->ListJobs(Ctx(reader).get(), lj, &ljr).ok());
  EXPECT_EQ(server.Upload(reader, "acme", "add", AdditionJsonl(4), &ds).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  st = server.Inference()->Generate(Ctx(reader).get(), g, &gr);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(st.error_message().find("\"inference\""), std::string::npos) << st.error_message();

  // Unknown scope names are refused by name.
  ireq.clear_scopes();
  ireq.add_scopes("admin");
  v1::IssueApiKeyResponse bad;
  st = server.Admin()->IssueApiKey(Ctx(server.admin_key()).get(), ireq, &bad);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("'admin'"), std::string::npos) << st.error_message();
}

TEST(KeysTest, ExpiredKeyIsUnauthenticatedWithinASecond) {
  TestServer server;
  server.CreateTenant("acme");
  v1::IssueApiKeyRequest ireq;
  ireq.set_tenant_id("acme");
  ireq.set_ttl_seconds(1);
  v1::IssueApiKeyResponse issued = Issue(server, ireq);
  const absl::Time expires = absl::FromUnixSeconds(issued.api_key().expires_at().seconds()) +
                             absl::Nanoseconds(issued.api_key().expires_at().nanos());
  // Valid (and cached by the server) until its expiry, refused from then on: the cache never outlives it.
  ExpectAcceptedUntil(server, issued.api_key().secret(), expires);
  ExpectRefusedAfter(server, issued.api_key().secret(), expires);
  ireq.set_ttl_seconds(-1);
  v1::IssueApiKeyResponse bad;
  EXPECT_EQ(server.Admin()->IssueApiKey(Ctx(server.admin_key()).get(), ireq, &bad).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(KeysTest, RotationKeepsTheOldKeyUntilRevokedOrGraceEnds) {
  TestServer server;
  server.CreateTenant("acme");
  v1::IssueApiKeyRequest ireq;
  ireq.set_tenant_id("acme");
  ireq.add_scopes("read");
  v1::IssueApiKeyResponse old = Issue(server, ireq);

  // Without a grace period the old key keeps working; the new one inherits tenant and scopes.
  v1::IssueApiKeyRequest rot;
  rot.set_replaces_key_id(old.api_key().key_id());
  v1::IssueApiKeyResponse next = Issue(server, rot);
  EXPECT_EQ(next.api_key().tenant_id(), "acme");
  EXPECT_EQ(std::vector<std::string>(next.api_key().scopes().begin(), next.api_key().scopes().end()),
            std::vector<std::string>{"read"});
  EXPECT_TRUE(ListDatasets(server, old.api_key().secret()).ok());
  EXPECT_TRUE(ListDatasets(server, next.api_key().secret()).ok());

  // With a grace period of 1 s the old key stops then (1 s after the server handled the rotation, which
  // lies between the call and its return), the new one carries on.
  rot.set_replaces_key_id(next.api_key().key_id());
  rot.set_replaced_key_ttl_seconds(1);
  const absl::Time issue_sent = absl::Now();
  v1::IssueApiKeyResponse third = Issue(server, rot);
  const absl::Time issue_returned = absl::Now();
  v1::ListApiKeysRequest lreq;
  lreq.set_tenant_id("acme");
  v1::ListApiKeysResponse keys;
  ASSERT_TRUE(server.Admin()->ListApiKeys(Ctx(server.admin_key()).get(), lreq, &keys).ok());
  absl::Time grace_end = absl::InfiniteFuture();
  for (const v1::ApiKey& k : keys.api_keys()) {
    if (k.key_id() == next.api_key().key_id() && k.has_expires_at()) {
      grace_end = absl::FromUnixSeconds(k.expires_at().seconds()) + absl::Nanoseconds(k.expires_at().nanos());
    }
  }
  EXPECT_GE(grace_end, issue_sent + absl::Seconds(1) - absl::Microseconds(1));
  EXPECT_LE(grace_end, issue_returned + absl::Seconds(1));
  ExpectAcceptedUntil(server, next.api_key().secret(), issue_sent + absl::Seconds(1) - absl::Milliseconds(1));
  ExpectRefusedAfter(server, next.api_key().secret(), issue_returned + absl::Seconds(1));
  EXPECT_TRUE(ListDatasets(server, third.api_key().secret()).ok());

  // Errors: rotating a revoked or unknown key, a tenant that does not match.
  v1::RevokeApiKeyRequest rv;
  rv.set_key_id(old.api_key().key_id());
  v1::RevokeApiKeyResponse rvr;
  ASSERT_TRUE(server.Admin()->RevokeApiKey(Ctx(server.admin_key()).get(), rv, &rvr).ok());
  v1::IssueApiKeyResponse bad;
  rot.clear_replaced_key_ttl_seconds();
  rot.set_replaces_key_id(old.api_key().key_id());
  EXPECT_EQ(server.Admin()->IssueApiKey(Ctx(server.admin_key()).get(), rot, &bad).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  rot.set_replaces_key_id("nosuchkey000");
  EXPECT_EQ(server.Admin()->IssueApiKey(Ctx(server.admin_key()).get(), rot, &bad).error_code(),
            grpc::StatusCode::NOT_FOUND);
  server.CreateTenant("beta");
  rot.set_replaces_key_id(third.api_key().key_id());
  rot.set_tenant_id("beta");
  grpc::Status st = server.Admin()->IssueApiKey(Ctx(server.admin_key()).get(), rot, &bad);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("tenant_id"), std::string::npos);
}

TEST(KeysTest, RevocationByAnotherProcessTakesEffectWithinOneSecond) {
  TestServer server;
  server.CreateTenant("acme");
  v1::IssueApiKeyRequest ireq;
  ireq.set_tenant_id("acme");
  v1::IssueApiKeyResponse issued = Issue(server, ireq);
  ASSERT_TRUE(ListDatasets(server, issued.api_key().secret()).ok());  // cached by the server
  // Another process (here: a second Registry on the same data dir) revokes the key.
  auto other = storage::Registry::Open(server.data_dir());
  ASSERT_TRUE(other.ok()) << other.status();
  // The server's cached entry was made before `revoked_at` and lives 1 s (auth.h): a call sent 1 s after
  // the revocation began is checked against the registry, whatever the machine's speed.
  absl::Time revoked_at = absl::Now();
  ASSERT_TRUE((*other)->RevokeApiKey(issued.api_key().key_id(), "other-process").ok());
  ExpectRefusedAfter(server, issued.api_key().secret(), revoked_at + absl::Seconds(1));
}

}  // namespace
}  // namespace tessera::services::testing
