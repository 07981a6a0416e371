// The promotion gate (issue 16, section 4), through the public API on a real server on loopback:
// auto_promote promotes only when validation improves AND the general-ability loss rose by at most
// max_general_regression relative to the backbone's; the version's metrics record both losses, the
// decision and its reason, and the VersionPublished event says whether it was promoted and why.
//  - CreateJob validates max_general_regression (field 11) and names it;
//  - the scheduler's decision on given numbers (a runner that reports fixed losses): each condition
//    alone blocks, the job's bound overrides the server's default, and without general-ability
//    numbers the gate decides on validation alone and says so;
//  - real training on random:tiny with a general text the training data moves away from: the same job
//    is promoted under a loose bound and kept under a tight one.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

v1::CreateJobRequest Request(const std::string& tenant, const std::string& dataset_id) {
  v1::CreateJobRequest req;
  req.set_tenant_id(tenant);
  req.set_training_dataset_id(dataset_id);
  req.mutable_hyperparameters()->set_max_steps(4);
  req.mutable_hyperparameters()->set_batch_size(4);
  req.mutable_hyperparameters()->set_seq_len(32);
  req.set_auto_promote(true);
  return req;
}

struct Outcome {
  v1::Job job;
  v1::ExpertVersion version;
  v1::VersionPublished event;
  int version_events = 0;
};

// Creates the job, follows it to the end, and returns the job, its version and its "version" event.
Outcome RunToEnd(TestServer& server, const std::string& tenant, const std::string& key,
            const v1::CreateJobRequest& req) {
  Outcome o;
  v1::Job created;
  const grpc::Status s = server.FineTuning()->CreateJob(Ctx(key).get(), req, &created);
  EXPECT_TRUE(s.ok()) << s.error_message();
  v1::WatchJobRequest w;
  w.set_tenant_id(tenant);
  w.set_job_id(created.job_id());
  auto ctx = Ctx(key);
  // Training on a shared, loaded machine can take longer than Ctx's 60 s.
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(240));
  auto reader = server.FineTuning()->WatchJob(ctx.get(), w);
  v1::JobEvent e;
  while (reader->Read(&e)) {
    if (e.has_version()) {
      o.event = e.version();
      ++o.version_events;
    }
  }
  EXPECT_TRUE(reader->Finish().ok());
  v1::GetJobRequest g;
  g.set_tenant_id(tenant);
  g.set_job_id(created.job_id());
  EXPECT_TRUE(server.FineTuning()->GetJob(Ctx(key).get(), g, &o.job).ok());
  EXPECT_EQ(o.job.state(), v1::SUCCEEDED) << o.job.error();
  if (o.job.has_result_version()) {
    v1::GetVersionRequest vr;
    vr.set_tenant_id(tenant);
    vr.set_version(o.job.result_version());
    EXPECT_TRUE(server.Experts()->GetVersion(Ctx(key).get(), vr, &o.version).ok());
  }
  return o;
}

TEST(PromotionGateTest, CreateJobValidatesMaxGeneralRegression) {
  TestServer server;
  const std::string key = server.CreateTenant("acme");
  v1::Dataset ds;
  ASSERT_TRUE(server.Upload(key, "acme", "d", AdditionJsonl(8), &ds).ok());
  for (double bad : {-0.01, 10.5, std::nan("")}) {
    v1::CreateJobRequest req = Request("acme", ds.dataset_id());
    req.set_max_general_regression(bad);
    v1::Job job;
    const grpc::Status s = server.FineTuning()->CreateJob(Ctx(key).get(), req, &job);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_TRUE(absl::StartsWith(s.error_message(), "max_general_regression")) << s.error_message();
  }
  for (double good : {0.0, 0.05, 10.0}) {
    v1::CreateJobRequest req = Request("acme", ds.dataset_id());
    req.set_max_general_regression(good);
    v1::Job job;
    const grpc::Status s = server.FineTuning()->CreateJob(Ctx(key).get(), req, &job);
    EXPECT_TRUE(s.ok()) << good << ": " << s.error_message();
  }
}

// Reports fixed numbers, so the scheduler's decision is what is tested.
class FixedRunner final : public JobRunner {
 public:
  absl::StatusOr<JobOutput> Run(JobContext&) override {
    JobOutput o = out;
    o.weights = "not parsed by the scheduler";
    o.slots = {{0, 1}};
    o.backbone_sha256 = sha256;
    return o;
  }
  absl::StatusOr<double> EvaluateVersion(JobContext&, int64_t) override {
    return absl::UnimplementedError("the live version is the job's base in these tests");
  }
  JobOutput out;
  std::string sha256;
};

TEST(PromotionGateTest, DecisionOnGivenNumbersRecordedOnTheVersionAndTheEvent) {
  FixedRunner* runner = nullptr;
  TestServerOptions opts;
  opts.max_general_regression = 0.05;  // the server's default bound
  opts.make_runner = [&runner](storage::Registry*) -> absl::StatusOr<std::unique_ptr<JobRunner>> {
    auto r = std::make_unique<FixedRunner>();
    runner = r.get();
    return r;
  };
  TestServer server(opts);
  ASSERT_NE(runner, nullptr);
  // (tessera-server's own default is no bound: the test server sets 0.05 above.)
  runner->sha256 = server.server().backbone().sha256;
  struct Case {
    const char* name;
    double val, base_val;
    std::optional<double> general, base_general;
    std::optional<double> bound;  // the job's max_general_regression
    bool promoted;
    const char* reason_has;
  };
  const Case cases[] = {
      {"both_ok", 1.0, 2.0, 1.04, 1.0, std::nullopt, true, "within max_general_regression 0.05 (the server's default)"},
      {"general_over_default", 1.0, 2.0, 1.06, 1.0, std::nullopt, false, "exceeds max_general_regression 0.05"},
      {"job_bound_allows", 1.0, 2.0, 1.06, 1.0, 0.1, true, "within max_general_regression 0.1"},
      {"job_bound_tighter", 1.0, 2.0, 1.01, 1.0, 0.0, false, "exceeds max_general_regression 0"},
      {"validation_worse", 2.5, 2.0, 1.0, 1.0, std::nullopt, false, "does not beat live version 0's 2"},
      {"no_general_data", 1.0, 2.0, std::nullopt, std::nullopt, std::nullopt, true, "decided on validation alone"},
  };
  int index = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string tenant = absl::StrCat("gate", index++);
    const std::string key = server.CreateTenant(tenant);
    v1::Dataset ds;
    ASSERT_TRUE(server.Upload(key, tenant, "d", AdditionJsonl(8), &ds).ok());
    runner->out = JobOutput{};
    runner->out.val_loss = c.val;
    runner->out.base_val_loss = c.base_val;
    runner->out.general_loss = c.general;
    runner->out.base_general_loss = c.base_general;
    v1::CreateJobRequest req = Request(tenant, ds.dataset_id());
    if (c.bound) req.set_max_general_regression(*c.bound);
    const Outcome o = RunToEnd(server, tenant, key, req);
    EXPECT_EQ(o.version_events, 1);
    EXPECT_EQ(o.job.promoted(), c.promoted);
    EXPECT_EQ(o.event.promoted(), c.promoted);
    EXPECT_EQ(o.version.live(), c.promoted);
    EXPECT_TRUE(absl::StrContains(o.event.reason(), c.reason_has)) << o.event.reason();
    EXPECT_EQ(absl::StartsWith(o.event.reason(), "not promoted"), !c.promoted) << o.event.reason();
    const v1::VersionMetrics& m = o.version.metrics();
    EXPECT_EQ(m.promotion_decision(), c.promoted ? "promote" : "keep");
    EXPECT_EQ(m.promotion_reason(), o.event.reason());
    EXPECT_EQ(m.has_general_loss(), c.general.has_value());
    if (c.general) {
      EXPECT_DOUBLE_EQ(m.general_loss(), *c.general);
      EXPECT_DOUBLE_EQ(m.base_general_loss(), *c.base_general);
    }
  }
  // Without auto_promote: recorded as not requested.
  const std::string key = server.CreateTenant("plain");
  v1::Dataset ds;
  ASSERT_TRUE(server.Upload(key, "plain", "d", AdditionJsonl(8), &ds).ok());
  runner->out = JobOutput{};
  runner->out.val_loss = 1;
  runner->out.base_val_loss = 2;
  v1::CreateJobRequest req = Request("plain", ds.dataset_id());
  req.set_auto_promote(false);
  const Outcome o = RunToEnd(server, "plain", key, req);
  EXPECT_FALSE(o.job.promoted());
  EXPECT_EQ(o.version.metrics().promotion_decision(), "not_requested");
  EXPECT_EQ(o.event.reason(), "auto_promote not requested");
}

// Real training: the general text is the training prompts followed by letters, where training
// teaches digits; the job's validation loss improves and its general-ability loss rises. Under a loose
// bound it is promoted; the same job under a tight bound is not.
TEST(PromotionGateTest, RealJobPromotedUnderALooseBoundKeptUnderATightOne) {
  TestServerOptions opts;
  opts.training = true;
  opts.model = true;
  const std::string general_path =
      ::testing::TempDir() + "/promotion_gate_general_" + std::to_string(::getpid()) + ".jsonl";
  struct RemovedAtEnd {  // declared before the server, so removed after it stops
    std::string path;
    ~RemovedAtEnd() { std::remove(path.c_str()); }
  } general_file{general_path};
  {
    std::ofstream f(general_path);
    for (int i = 0; i < 48; ++i) {
      f << "{\"text\": \"add(" << i % 10 << "," << (i * 7) % 10 << ")=" << std::string(6, 'q' + i % 5) << "\"}\n";
    }
  }
  opts.general_eval_data = general_path;
  TestServer server(opts);
  v1::Dataset ds_loose, ds_tight;
  const std::string key_loose = server.CreateTenant("loose");
  const std::string key_tight = server.CreateTenant("tight");
  ASSERT_TRUE(server.Upload(key_loose, "loose", "d", AdditionJsonl(64), &ds_loose).ok());
  ASSERT_TRUE(server.Upload(key_tight, "tight", "d", AdditionJsonl(64), &ds_tight).ok());
  auto request = [](const std::string& tenant, const std::string& ds, double bound) {
    v1::CreateJobRequest req = Request(tenant, ds);
    req.mutable_hyperparameters()->set_max_steps(10);
    req.mutable_hyperparameters()->set_batch_size(8);
    req.mutable_hyperparameters()->set_learning_rate(0.02);
    req.mutable_hyperparameters()->set_warmup_steps(2);
    req.mutable_expert_selection()->mutable_auto_()->set_max_experts(8);
    req.set_max_general_regression(bound);
    return req;
  };
  const Outcome loose = RunToEnd(server, "loose", key_loose, request("loose", ds_loose.dataset_id(), 10.0));
  const Outcome tight = RunToEnd(server, "tight", key_tight, request("tight", ds_tight.dataset_id(), 0.001));
  for (const Outcome* o : {&loose, &tight}) {
    const v1::VersionMetrics& m = o->version.metrics();
    // The preconditions of the two decisions: validation improved, general ability regressed.
    ASSERT_LT(m.val_loss(), m.base_val_loss());
    ASSERT_TRUE(m.has_general_loss());
    ASSERT_GT(m.base_general_loss(), 0);
    ASSERT_GT((m.general_loss() - m.base_general_loss()) / m.base_general_loss(), 0.001)
        << m.general_loss() << " vs " << m.base_general_loss();
  }
  std::printf("loose: %s\ntight: %s\n", loose.event.reason().c_str(), tight.event.reason().c_str());
  // Same data, seed and hyperparameters: the same numbers.
  EXPECT_DOUBLE_EQ(loose.version.metrics().general_loss(), tight.version.metrics().general_loss());
  EXPECT_TRUE(loose.job.promoted());
  EXPECT_TRUE(loose.event.promoted());
  EXPECT_TRUE(loose.version.live());
  EXPECT_EQ(loose.version.metrics().promotion_decision(), "promote");
  EXPECT_TRUE(absl::StrContains(loose.event.reason(), "within max_general_regression 10")) << loose.event.reason();
  EXPECT_FALSE(tight.job.promoted());
  EXPECT_FALSE(tight.event.promoted());
  EXPECT_FALSE(tight.version.live());
  EXPECT_EQ(tight.version.metrics().promotion_decision(), "keep");
  EXPECT_TRUE(absl::StartsWith(tight.event.reason(), "not promoted: validation loss")) << tight.event.reason();
  EXPECT_TRUE(absl::StrContains(tight.event.reason(), "exceeds max_general_regression 0.001")) << tight.event.reason();
  EXPECT_EQ(tight.version.metrics().promotion_reason(), tight.event.reason());
}

}  // namespace
}  // namespace tessera::services::testing
