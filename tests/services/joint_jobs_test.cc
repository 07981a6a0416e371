// Several tenants' jobs trained together by a real server (tessera-server --max-joint-jobs, random:tiny,
// gRPC on loopback): with one training loop (--max-concurrent-jobs 1) three jobs of three tenants run at
// the same time; one is cancelled and one fails while the third keeps training and succeeds, and its
// version is the one the same job gets on a server that trains one job at a time (today's path).
#include <chrono>
#include <cmath>
#include <thread>

#include "core/io/safetensors.h"
#include "gtest/gtest.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

storage::Job Poll(TestServer& server, const std::string& tenant, const std::string& job_id) {
  absl::StatusOr<storage::Job> j = server.registry().GetJob(tenant, job_id);
  EXPECT_TRUE(j.ok()) << j.status();
  return j.ok() ? *j : storage::Job();
}

// Waits until `done(job)` (120 s at most).
template <typename F>
storage::Job WaitFor(TestServer& server, const std::string& tenant, const std::string& job_id, F done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(300);
  for (;;) {
    storage::Job j = Poll(server, tenant, job_id);
    if (done(j)) return j;
    if (absl::Now() > deadline) {
      ADD_FAILURE() << "timed out waiting for job " << job_id << " (state "
                    << storage::JobStateName(j.state) << ", step " << j.progress.step << ")";
      return j;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

bool Ended(const storage::Job& j) {
  return j.state == storage::JobState::kSucceeded || j.state == storage::JobState::kFailed ||
         j.state == storage::JobState::kCancelled;
}

struct Tenant {
  std::string id, key, dataset;
};

Tenant AddTenant(TestServer& server, const std::string& id, int seed) {
  Tenant t;
  t.id = id;
  t.key = server.CreateTenant(id);
  v1::Dataset ds;
  EXPECT_TRUE(server.Upload(t.key, id, "d", AdditionJsonl(24, seed), &ds).ok());
  t.dataset = ds.dataset_id();
  return t;
}

v1::CreateJobRequest Request(const Tenant& t, int64_t steps) {
  v1::CreateJobRequest req;
  req.set_tenant_id(t.id);
  req.set_training_dataset_id(t.dataset);
  req.mutable_hyperparameters()->set_max_steps(steps);
  req.mutable_hyperparameters()->set_batch_size(2);
  req.mutable_hyperparameters()->set_seq_len(16);
  req.mutable_hyperparameters()->set_learning_rate(0.01);
  auto* e = req.mutable_expert_selection()->mutable_explicit_();
  e->add_slots()->set_expert(1);  // every job here trains (0, 1): the same slot id, each its own copy
  auto* s = e->add_slots();
  s->set_layer(1);
  s->set_expert(2);
  return req;
}

std::string Create(TestServer& server, const Tenant& t, const v1::CreateJobRequest& req) {
  v1::Job job;
  const grpc::Status s = server.FineTuning()->CreateJob(Ctx(t.key).get(), req, &job);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return job.job_id();
}

std::vector<float> VersionWeights(TestServer& server, const std::string& tenant, int64_t version, double* val_loss) {
  absl::StatusOr<storage::ExpertVersion> v = server.registry().GetVersion(tenant, version);
  EXPECT_TRUE(v.ok()) << v.status();
  if (!v.ok()) return {};
  *val_loss = v->val_loss.value_or(-1);
  absl::StatusOr<std::string> blob = server.registry().blobs().Get(v->sha256);
  EXPECT_TRUE(blob.ok());
  auto file = io::SafetensorsFile::FromBytes(*blob);
  EXPECT_TRUE(file.ok()) << file.status();
  std::vector<float> out;
  for (const std::string& name : (*file)->names()) {
    absl::StatusOr<std::vector<float>> values = (*file)->ReadF32(name);
    EXPECT_TRUE(values.ok()) << values.status();
    if (values.ok()) out.insert(out.end(), values->begin(), values->end());
  }
  return out;
}

TEST(JointJobsTest, CancelledAndFailingJobsLeaveTheThirdTrainingToItsSoloResult) {
  constexpr int64_t kSteps = 40;
  // The reference: the same job alone on a server that trains one job at a time.
  double solo_loss = 0;
  std::vector<float> solo_weights;
  {
    TestServerOptions o;
    o.training = true;
    TestServer solo(o);
    Tenant acme = AddTenant(solo, "acme", 1);
    const std::string id = Create(solo, acme, Request(acme, kSteps));
    storage::Job j = WaitFor(solo, "acme", id, Ended);
    ASSERT_EQ(j.state, storage::JobState::kSucceeded) << j.error;
    solo_weights = VersionWeights(solo, "acme", j.result_version.value_or(0), &solo_loss);
  }

  TestServerOptions o;
  o.training = true;
  o.max_concurrent_jobs = 1;  // one loop ...
  o.max_joint_jobs = 3;       // ... of up to three jobs
  o.job_heartbeat = absl::Milliseconds(200);
  TestServer server(o);
  Tenant acme = AddTenant(server, "acme", 1), beta = AddTenant(server, "beta", 2),
         gamma = AddTenant(server, "gamma", 3);
  // beta: a long job, cancelled below while the others train.
  const std::string long_id = Create(server, beta, Request(beta, 100000));
  WaitFor(server, "beta", long_id, [](const storage::Job& j) { return j.progress.step >= 2; });
  // gamma: its validation data has no target within seq_len, so it fails once in the loop.
  v1::Dataset bad_val;
  ASSERT_TRUE(server.Upload(gamma.key, "gamma", "v",
                            "{\"prompt\": \"add(11,22) add(33,44) add(1,2)=\", \"completion\": \"3\"}\n",
                            &bad_val).ok());
  v1::CreateJobRequest failing = Request(gamma, 50);
  failing.set_validation_dataset_id(bad_val.dataset_id());
  const std::string fail_id = Create(server, gamma, failing);
  const std::string id = Create(server, acme, Request(acme, kSteps));

  storage::Job failed = WaitFor(server, "gamma", fail_id, Ended);
  EXPECT_EQ(failed.state, storage::JobState::kFailed);
  EXPECT_NE(failed.error.find("target"), std::string::npos) << failed.error;
  // acme trains while beta does (one loop: without joint training it would wait in the queue behind
  // beta, which runs until cancelled below). On a slow poll acme may already have finished: either way
  // it advanced while beta was still running (checked right after).
  storage::Job a = WaitFor(server, "acme", id, [](const storage::Job& j) { return j.progress.step >= 5 || Ended(j); });
  EXPECT_TRUE(a.state == storage::JobState::kRunning || a.state == storage::JobState::kSucceeded) << a.error;
  EXPECT_GE(a.progress.step, 5);
  storage::Job b = Poll(server, "beta", long_id);
  EXPECT_EQ(b.state, storage::JobState::kRunning);
  const int64_t b_step = b.progress.step;
  v1::CancelJobRequest c;
  c.set_tenant_id("beta");
  c.set_job_id(long_id);
  v1::Job cancelled;
  ASSERT_TRUE(server.FineTuning()->CancelJob(Ctx(beta.key).get(), c, &cancelled).ok());
  EXPECT_EQ(cancelled.state(), v1::CANCELLED);

  a = WaitFor(server, "acme", id, Ended);
  ASSERT_EQ(a.state, storage::JobState::kSucceeded) << a.error;
  EXPECT_EQ(a.progress.step, kSteps);
  b = Poll(server, "beta", long_id);
  EXPECT_EQ(b.state, storage::JobState::kCancelled);
  EXPECT_GT(b_step, 2);  // beta kept training while acme and gamma joined its loop
  absl::StatusOr<std::vector<storage::ExpertVersion>> none = server.registry().ListVersions("beta");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());

  // acme's version is its solo result (same data order, its own loss normalisation and slots).
  double joint_loss = 0;
  std::vector<float> joint_weights = VersionWeights(server, "acme", a.result_version.value_or(0), &joint_loss);
  EXPECT_NEAR(joint_loss, solo_loss, 1e-4);
  ASSERT_EQ(joint_weights.size(), solo_weights.size());
  ASSERT_FALSE(solo_weights.empty());
  double max_diff = 0;
  for (size_t i = 0; i < solo_weights.size(); ++i) {
    max_diff = std::max(max_diff, static_cast<double>(std::fabs(joint_weights[i] - solo_weights[i])));
  }
  EXPECT_LT(max_diff, 1e-3);
}

}  // namespace
}  // namespace tessera::services::testing
