// Quotas end to end (storage/quotas.h, services/rate_limiter.h): a real server on loopback, gRPC and
// HTTP. Each limit is hit (RESOURCE_EXHAUSTED naming the quota, the limit and when to retry; gRPC
// `retry-after` trailing metadata and HTTP 429 + Retry-After for the rate limits) and recovered; defaults
// apply to tenants without overrides; overrides survive a restart; Set/GetQuotas are admin-only and
// audited; a job whose version could not be published fails before it trains.
#include <atomic>
#include <condition_variable>
#include <mutex>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/services/http/http_client.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

std::string Trailer(const grpc::ClientContext& ctx, const std::string& name) {
  auto it = ctx.GetServerTrailingMetadata().find(name);
  return it == ctx.GetServerTrailingMetadata().end() ? "" : std::string(it->second.data(), it->second.size());
}

// Sets the given quotas (name -> value) of `tenant` with `key`.
grpc::Status SetQuotas(TestServer& server, const std::string& key, const std::string& tenant,
                       const std::vector<std::pair<std::string, int64_t>>& values, v1::TenantQuotas* out = nullptr) {
  v1::SetQuotasRequest req;
  req.set_tenant_id(tenant);
  for (const auto& [name, v] : values) {
    const google::protobuf::FieldDescriptor* f = v1::Quotas::descriptor()->FindFieldByName(name);
    EXPECT_NE(f, nullptr) << name;
    req.mutable_quotas()->GetReflection()->SetInt64(req.mutable_quotas(), f, v);
  }
  v1::SetQuotasResponse resp;
  grpc::Status st = server.Admin()->SetQuotas(Ctx(key).get(), req, &resp);
  if (out != nullptr) *out = resp.quotas();
  return st;
}

v1::TenantQuotas GetQuotas(TestServer& server, const std::string& tenant) {
  v1::GetQuotasRequest req;
  req.set_tenant_id(tenant);
  v1::GetQuotasResponse resp;
  grpc::Status st = server.Admin()->GetQuotas(Ctx(server.admin_key()).get(), req, &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return resp.quotas();
}

// tessera_quota_refusals_total{tenant, quota} of `server` (0 when no such series).
double Refusals(TestServer& server, const std::string& tenant, const std::string& quota) {
  for (const auto& [labels, value] : server.server().metrics().Series(kQuotaRefusalsMetric)) {
    if (labels == Labels{{"tenant", tenant}, {"quota", quota}}) return value;
  }
  return 0;
}

v1::CreateJobRequest JobRequest(const std::string& tenant, const std::string& dataset_id) {
  v1::CreateJobRequest req;
  req.set_tenant_id(tenant);
  req.set_training_dataset_id(dataset_id);
  req.mutable_hyperparameters()->set_max_steps(2);
  req.mutable_hyperparameters()->set_batch_size(2);
  req.mutable_hyperparameters()->set_seq_len(16);
  return req;
}

grpc::Status CreateJob(TestServer& server, const std::string& key, const v1::CreateJobRequest& req, v1::Job* job) {
  return server.FineTuning()->CreateJob(Ctx(key).get(), req, job);
}

// ---------------------------------------------------------------------------------------------------
// Inference: gRPC Generate / GenerateStream / Score and HTTP completions / chat.

// The rate limiter's clock (ServerOptions::rate_limit_clock): it moves only when a test advances it, so
// what is admitted and refused does not depend on how fast this machine serves requests.
class FakeClock {
 public:
  absl::Time Now() {
    std::lock_guard<std::mutex> lock(mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    std::lock_guard<std::mutex> lock(mu_);
    now_ += d;
  }

 private:
  std::mutex mu_;
  absl::Time now_ = absl::FromUnixSeconds(1700000000);
};

class InferenceQuotaTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    clock_ = new FakeClock;
    TestServerOptions o = WithModel();
    o.http = true;
    FakeClock* clock = clock_;
    o.rate_limit_clock = [clock] { return clock->Now(); };
    server_ = new TestServer(o);
    key_ = new std::string(server_->CreateTenant("acme"));
  }
  static void TearDownTestSuite() {
    delete server_;
    delete key_;
    delete clock_;
  }
  void TearDown() override {
    // Back to unlimited for the next test.
    ASSERT_TRUE(SetQuotas(*server_, server_->admin_key(), "acme",
                          {{"requests_per_second", 0}, {"tokens_per_minute", 0}}).ok());
  }
  v1::GenerateRequest Gen() {
    v1::GenerateRequest r;
    r.set_tenant_id("acme");
    r.set_prompt("add(1,2)=");
    r.set_max_tokens(4);
    return r;
  }
  grpc::Status Generate(grpc::ClientContext* ctx) {
    v1::GenerateResponse resp;
    return server_->Inference()->Generate(ctx, Gen(), &resp);
  }
  grpc::Status Score(grpc::ClientContext* ctx) {
    v1::ScoreRequest r;
    r.set_tenant_id("acme");
    r.set_text("add(1,2)=3");
    v1::ScoreResponse resp;
    return server_->Inference()->Score(ctx, r, &resp);
  }
  grpc::Status Stream(grpc::ClientContext* ctx, int* chunks) {
    auto reader = server_->Inference()->GenerateStream(ctx, Gen());
    v1::GenerateChunk c;
    *chunks = 0;
    while (reader->Read(&c)) ++*chunks;
    return reader->Finish();
  }
  static void ExpectRateRefusal(const grpc::Status& st, const grpc::ClientContext& ctx, const std::string& quota) {
    EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
    EXPECT_TRUE(absl::StrContains(st.error_message(), "quota exceeded for tenant 'acme'")) << st.error_message();
    EXPECT_TRUE(absl::StrContains(st.error_message(), quota)) << st.error_message();
    EXPECT_TRUE(absl::StrContains(st.error_message(), "retry after ")) << st.error_message();
    int64_t seconds = 0;
    EXPECT_TRUE(absl::SimpleAtoi(Trailer(ctx, "retry-after"), &seconds)) << "'" << Trailer(ctx, "retry-after") << "'";
    EXPECT_GE(seconds, 1);
    EXPECT_TRUE(absl::StrContains(st.error_message(), absl::StrCat("retry after ", seconds, " s"))) << st.error_message();
  }

  static TestServer* server_;
  static std::string* key_;
  static FakeClock* clock_;
};
FakeClock* InferenceQuotaTest::clock_ = nullptr;
TestServer* InferenceQuotaTest::server_ = nullptr;
std::string* InferenceQuotaTest::key_ = nullptr;

TEST_F(InferenceQuotaTest, TokensPerMinuteRefusesEveryInferenceRouteUntilRaised) {
  // 1 token/min: the first request is admitted on the positive balance, its tokens put the tenant in
  // debt, and the clock stands still, so every later one is refused.
  ASSERT_TRUE(SetQuotas(*server_, server_->admin_key(), "acme", {{"tokens_per_minute", 1}}).ok());
  const double refused_before = Refusals(*server_, "acme", "tokens_per_minute");
  auto first = Ctx(*key_);
  ASSERT_TRUE(Generate(first.get()).ok());

  auto gen = Ctx(*key_);
  ExpectRateRefusal(Generate(gen.get()), *gen, "tokens_per_minute limit 1 tokens/min");
  auto score = Ctx(*key_);
  ExpectRateRefusal(Score(score.get()), *score, "tokens_per_minute limit 1 tokens/min");
  auto stream = Ctx(*key_);
  int chunks = -1;
  ExpectRateRefusal(Stream(stream.get(), &chunks), *stream, "tokens_per_minute limit 1 tokens/min");
  EXPECT_EQ(chunks, 0);

  ApiClient api(server_->server().http_port(), *key_);
  for (const auto& [path, body] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"/v1/completions", {{"model", "acme"}, {"prompt", "add(1,2)="}, {"max_tokens", 4}}},
           {"/v1/completions", {{"model", "acme"}, {"prompt", "add(1,2)="}, {"max_tokens", 4}, {"stream", true}}},
           {"/v1/chat/completions",
            {{"model", "acme"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 4}}}}) {
    SCOPED_TRACE(path + " " + body.dump());
    HttpReply r = api.Post(path, body);
    EXPECT_EQ(r.status, 429) << r.body;
    EXPECT_EQ(r.error_field("type"), "rate_limit_error") << r.body;
    EXPECT_EQ(r.error_field("code"), "rate_limit_exceeded") << r.body;
    const std::string message = r.json["error"]["message"].is_string() ? r.json["error"]["message"].get<std::string>() : "";
    EXPECT_TRUE(absl::StrContains(message, "tokens_per_minute limit 1 tokens/min")) << r.body;
    int64_t seconds = 0;
    EXPECT_TRUE(absl::SimpleAtoi(r.header("Retry-After"), &seconds)) << r.header("Retry-After");
    EXPECT_GE(seconds, 1);
    EXPECT_TRUE(absl::StrContains(message, absl::StrCat("retry after ", seconds, " s"))) << r.body;
  }

  // Each refusal is counted: three gRPC calls and three HTTP requests.
  EXPECT_EQ(Refusals(*server_, "acme", "tokens_per_minute") - refused_before, 6);

  // Raised by the operator: served at once (the limiter re-reads the tenant's quotas).
  ASSERT_TRUE(SetQuotas(*server_, server_->admin_key(), "acme", {{"tokens_per_minute", 1000000}}).ok());
  auto again = Ctx(*key_);
  EXPECT_TRUE(Generate(again.get()).ok());
  HttpReply ok = api.Post("/v1/completions", {{"model", "acme"}, {"prompt", "add(1,2)="}, {"max_tokens", 4}});
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_TRUE(ok.header("Retry-After").empty());
}

TEST_F(InferenceQuotaTest, RequestsPerSecondRefusesABurstAndRecoversOnItsOwn) {
  ASSERT_TRUE(SetQuotas(*server_, server_->admin_key(), "acme", {{"requests_per_second", 1}}).ok());
  // 1 request/s, bursts of one: the first call takes the bucket's only request, the next is refused
  // (the clock stands still between them), with retry-after 1 s.
  auto first = Ctx(*key_);
  ASSERT_TRUE(Score(first.get()).ok());
  auto second = Ctx(*key_);
  grpc::Status st = Score(second.get());
  ExpectRateRefusal(st, *second, "requests_per_second limit 1 requests/s");
  EXPECT_EQ(Trailer(*second, "retry-after"), "1");
  // Not yet refilled a millisecond early; refilled by itself once the second has passed.
  clock_->Advance(absl::Milliseconds(999));
  auto early = Ctx(*key_);
  EXPECT_EQ(Score(early.get()).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  clock_->Advance(absl::Milliseconds(1));
  auto refilled = Ctx(*key_);
  st = Score(refilled.get());
  EXPECT_TRUE(st.ok()) << st.error_message();
  // HTTP shares the tenant's bucket: the gRPC call just took it.
  ApiClient api(server_->server().http_port(), *key_);
  HttpReply r = api.Post("/v1/completions", {{"model", "acme"}, {"prompt", "x"}, {"max_tokens", 1}});
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_EQ(r.header("Retry-After"), "1");
  EXPECT_EQ(r.error_field("type"), "rate_limit_error") << r.body;
  clock_->Advance(absl::Seconds(1));
  r = api.Post("/v1/completions", {{"model", "acme"}, {"prompt", "x"}, {"max_tokens", 1}});
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(r.header("Retry-After").empty());
}

// ---------------------------------------------------------------------------------------------------
// Jobs, storage, versions; admin-only; defaults; restart.

TEST(QuotaTest, QueuedJobsStorageAndVersionsAreRefusedNamingTheLimitAndRecover) {
  TestServer server;
  const std::string key = server.CreateTenant("acme");
  const std::string data = AdditionJsonl(16);
  v1::Dataset ds;
  ASSERT_TRUE(server.Upload(key, "acme", "train", data, &ds).ok());

  // max_queued_jobs (no runner here: jobs stay queued).
  ASSERT_TRUE(SetQuotas(server, server.admin_key(), "acme", {{"max_queued_jobs", 1}}).ok());
  v1::Job j1, j2;
  ASSERT_TRUE(CreateJob(server, key, JobRequest("acme", ds.dataset_id()), &j1).ok());
  auto ctx = Ctx(key);
  grpc::Status st = server.FineTuning()->CreateJob(ctx.get(), JobRequest("acme", ds.dataset_id()), &j2);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_TRUE(absl::StrContains(st.error_message(), "max_queued_jobs limit 1 jobs")) << st.error_message();
  EXPECT_TRUE(absl::StrContains(st.error_message(), "retry once one of them starts or is cancelled"));
  EXPECT_EQ(Trailer(*ctx, "retry-after"), "") << "no time-based retry for a count limit";
  v1::CancelJobRequest cancel;
  cancel.set_tenant_id("acme");
  cancel.set_job_id(j1.job_id());
  v1::Job cancelled;
  ASSERT_TRUE(server.FineTuning()->CancelJob(Ctx(key).get(), cancel, &cancelled).ok());
  ASSERT_TRUE(CreateJob(server, key, JobRequest("acme", ds.dataset_id()), &j2).ok());

  // storage_bytes: room for the first dataset only.
  ASSERT_TRUE(SetQuotas(server, server.admin_key(), "acme", {{"storage_bytes", ds.size_bytes() + 10}}).ok());
  v1::Dataset second;
  st = server.Upload(key, "acme", "second", AdditionJsonl(16, 2), &second);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_TRUE(absl::StrContains(st.error_message(), absl::StrCat("storage_bytes limit ", ds.size_bytes() + 10)))
      << st.error_message();

  // max_versions: two published, limit two -> no new job.
  ASSERT_TRUE(SetQuotas(server, server.admin_key(), "acme", {{"storage_bytes", 0}, {"max_versions", 2}}).ok());
  v1::CancelJobRequest cancel2 = cancel;
  cancel2.set_job_id(j2.job_id());
  ASSERT_TRUE(server.FineTuning()->CancelJob(Ctx(key).get(), cancel2, &cancelled).ok());
  for (int i = 0; i < 2; ++i) {
    storage::NewVersion nv;
    nv.tenant_id = "acme";
    nv.blob_digest = server.registry().blobs().Put(absl::StrCat("weights ", i)).value();
    ASSERT_TRUE(server.registry().PublishVersion(nv, "test").ok());
  }
  v1::Job j3;
  st = CreateJob(server, key, JobRequest("acme", ds.dataset_id()), &j3);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_TRUE(absl::StrContains(st.error_message(), "max_versions limit 2 versions")) << st.error_message();
  // Raised: the upload and the job go through.
  ASSERT_TRUE(SetQuotas(server, server.admin_key(), "acme", {{"max_versions", 3}}).ok());
  EXPECT_TRUE(CreateJob(server, key, JobRequest("acme", ds.dataset_id()), &j3).ok());
  EXPECT_TRUE(server.Upload(key, "acme", "second", AdditionJsonl(16, 2), &second).ok());

  v1::TenantQuotas q = GetQuotas(server, "acme");
  EXPECT_EQ(q.usage().versions(), 2);
  EXPECT_EQ(q.usage().queued_jobs(), 1);
  EXPECT_EQ(q.usage().dataset_bytes(), ds.size_bytes() + second.size_bytes());
  EXPECT_EQ(q.effective().max_versions(), 3);
  EXPECT_TRUE(q.overrides().has_max_versions());
  EXPECT_TRUE(q.overrides().has_storage_bytes());
  EXPECT_EQ(q.overrides().storage_bytes(), 0);
  EXPECT_FALSE(q.overrides().has_tokens_per_minute());
  // One refusal of each, counted by tenant and quota.
  EXPECT_EQ(Refusals(server, "acme", "max_queued_jobs"), 1);
  EXPECT_EQ(Refusals(server, "acme", "storage_bytes"), 1);
  EXPECT_EQ(Refusals(server, "acme", "max_versions"), 1);
  EXPECT_EQ(Refusals(server, "acme", "requests_per_second"), 0);
}

TEST(QuotaTest, HttpFileUploadOverStorageIs429WithTheLimitNamed) {
  TestServerOptions o;
  o.http = true;
  TestServer server(o);
  const std::string key = server.CreateTenant("acme");
  ASSERT_TRUE(SetQuotas(server, server.admin_key(), "acme", {{"storage_bytes", 100}}).ok());
  ApiClient api(server.server().http_port(), key);
  HttpReply r = api.UploadFile("train.jsonl", AdditionJsonl(16), "fine-tune");
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "storage_bytes limit 100 bytes")) << r.body;
  EXPECT_TRUE(r.header("Retry-After").empty());
  ASSERT_TRUE(SetQuotas(server, server.admin_key(), "acme", {{"storage_bytes", -1}}).ok());  // default: unlimited
  EXPECT_EQ(api.UploadFile("train.jsonl", AdditionJsonl(16), "fine-tune").status, 200);
}

TEST(QuotaTest, AdminOnlyValidatedAndAudited) {
  TestServer server;
  const std::string key = server.CreateTenant("acme");
  grpc::Status st = SetQuotas(server, key, "acme", {{"max_versions", 1000000}});
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  v1::GetQuotasRequest get;
  get.set_tenant_id("acme");
  v1::GetQuotasResponse resp;
  st = server.Admin()->GetQuotas(Ctx(key).get(), get, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  st = SetQuotas(server, server.admin_key(), "acme", {{"max_versions", -2}});
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StartsWith(st.error_message(), "quotas.max_versions: must be >= 0")) << st.error_message();
  st = SetQuotas(server, server.admin_key(), "nobody", {{"max_versions", 1}});
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();
  ASSERT_TRUE(SetQuotas(server, server.admin_key(), "acme", {{"max_versions", 5}}).ok());

  v1::ListAuditEventsRequest audit;
  audit.set_action("tenant.quotas.set");
  v1::ListAuditEventsResponse events;
  ASSERT_TRUE(server.Admin()->ListAuditEvents(Ctx(server.admin_key()).get(), audit, &events).ok());
  int ok = 0, denied = 0, invalid = 0;
  for (const v1::AuditEvent& e : events.events()) {
    EXPECT_EQ(e.object(), "tenant/" + e.tenant_id());
    ok += e.result() == "OK";
    denied += e.result() == "PERMISSION_DENIED";
    invalid += e.result() == "INVALID_ARGUMENT";
    if (e.result() == "OK") {
      EXPECT_TRUE(absl::StrContains(e.detail(), "\"max_versions\":5")) << e.detail();
    }
  }
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(denied, 1);
  EXPECT_EQ(invalid, 1);
}

TEST(QuotaTest, DefaultsApplyToTenantsWithoutOverridesAndOverridesSurviveARestart) {
  TestServerOptions o;
  o.default_quotas[storage::Quota::kMaxQueuedJobs] = 1;
  o.default_quotas[storage::Quota::kRequestsPerSecond] = 40;
  TestServer server(o);
  const std::string acme = server.CreateTenant("acme");
  const std::string bob = server.CreateTenant("bob");
  v1::Dataset a, b;
  ASSERT_TRUE(server.Upload(acme, "acme", "d", AdditionJsonl(8), &a).ok());
  ASSERT_TRUE(server.Upload(bob, "bob", "d", AdditionJsonl(8), &b).ok());
  v1::TenantQuotas q = GetQuotas(server, "acme");
  EXPECT_EQ(q.defaults().max_queued_jobs(), 1);
  EXPECT_EQ(q.defaults().requests_per_second(), 40);
  EXPECT_EQ(q.defaults().storage_bytes(), 0);
  EXPECT_EQ(q.effective().max_queued_jobs(), 1);
  EXPECT_FALSE(q.overrides().has_max_queued_jobs());

  v1::Job j;
  for (const auto& [tenant, key, ds] : {std::tuple{"acme", acme, a}, std::tuple{"bob", bob, b}}) {
    ASSERT_TRUE(CreateJob(server, key, JobRequest(tenant, ds.dataset_id()), &j).ok());
    grpc::Status st = CreateJob(server, key, JobRequest(tenant, ds.dataset_id()), &j);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << tenant;
  }
  ASSERT_TRUE(SetQuotas(server, server.admin_key(), "acme", {{"max_queued_jobs", 3}}).ok());
  server.Restart();
  q = GetQuotas(server, "acme");
  EXPECT_EQ(q.effective().max_queued_jobs(), 3);
  EXPECT_EQ(q.overrides().max_queued_jobs(), 3);
  EXPECT_EQ(q.usage().queued_jobs(), 1);
  EXPECT_TRUE(CreateJob(server, acme, JobRequest("acme", a.dataset_id()), &j).ok());
  EXPECT_TRUE(CreateJob(server, acme, JobRequest("acme", a.dataset_id()), &j).ok());
  EXPECT_EQ(CreateJob(server, acme, JobRequest("acme", a.dataset_id()), &j).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(CreateJob(server, bob, JobRequest("bob", b.dataset_id()), &j).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED)
      << "bob still has the default";
}

// Holds each job until released, counting how many it was asked to train.
class GateRunner final : public JobRunner {
 public:
  absl::StatusOr<JobOutput> Run(JobContext& ctx) override {
    ++runs;
    std::unique_lock<std::mutex> lock(mu);
    while (!open && !ctx.ShouldStop()) cv.wait_for(lock, std::chrono::milliseconds(20));
    JobOutput o;
    o.weights = "weights of " + ctx.job().job_id;
    o.slots = {{0, 1}};
    o.val_loss = 1;
    o.base_val_loss = 2;
    o.backbone_sha256 = sha256;
    return o;
  }
  absl::StatusOr<double> EvaluateVersion(JobContext&, int64_t) override { return 1.0; }
  void Open() {
    std::lock_guard<std::mutex> lock(mu);
    open = true;
    cv.notify_all();
  }
  std::atomic<int> runs{0};
  std::string sha256;
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
};

TEST(QuotaTest, AJobWhoseVersionCouldNotBePublishedFailsBeforeTraining) {
  GateRunner* runner = nullptr;
  TestServerOptions o;
  o.make_runner = [&runner](storage::Registry*) -> absl::StatusOr<std::unique_ptr<JobRunner>> {
    auto r = std::make_unique<GateRunner>();
    runner = r.get();
    return r;
  };
  TestServer server(o);
  ASSERT_NE(runner, nullptr);
  runner->sha256 = server.server().backbone().sha256;
  const std::string key = server.CreateTenant("acme");
  v1::Dataset ds;
  ASSERT_TRUE(server.Upload(key, "acme", "d", AdditionJsonl(8), &ds).ok());
  v1::Job first, second;
  ASSERT_TRUE(CreateJob(server, key, JobRequest("acme", ds.dataset_id()), &first).ok());
  for (absl::Time end = absl::Now() + absl::Seconds(30); runner->runs.load() == 0 && absl::Now() < end;) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(runner->runs.load(), 1);
  ASSERT_TRUE(CreateJob(server, key, JobRequest("acme", ds.dataset_id()), &second).ok());  // queued behind
  // The operator allows one version: the running job's.
  ASSERT_TRUE(SetQuotas(server, server.admin_key(), "acme", {{"max_versions", 1}}).ok());
  runner->Open();
  auto wait_done = [&](const std::string& job_id) {
    v1::GetJobRequest get;
    get.set_tenant_id("acme");
    get.set_job_id(job_id);
    v1::Job j;
    for (absl::Time end = absl::Now() + absl::Seconds(60); absl::Now() < end;) {
      EXPECT_TRUE(server.FineTuning()->GetJob(Ctx(key).get(), get, &j).ok());
      if (j.state() == v1::SUCCEEDED || j.state() == v1::FAILED || j.state() == v1::CANCELLED) break;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return j;
  };
  v1::Job a = wait_done(first.job_id());
  EXPECT_EQ(a.state(), v1::SUCCEEDED) << a.error();
  v1::Job b = wait_done(second.job_id());
  EXPECT_EQ(b.state(), v1::FAILED);
  EXPECT_TRUE(absl::StrContains(b.error(), "max_versions limit 1 versions")) << b.error();
  EXPECT_EQ(runner->runs.load(), 1) << "the second job must not have trained";
  EXPECT_EQ(GetQuotas(server, "acme").usage().versions(), 1);
}

}  // namespace
}  // namespace tessera::services::testing
