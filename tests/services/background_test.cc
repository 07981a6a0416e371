// The server's background work: the LiveFollower (live-pointer moves made by another process reach the
// runtime; late applies never install an older version; failed applies are retried), the periodic blob
// GC (unreferenced old blobs go, referenced ones and unfinished jobs' checkpoints stay), and the prompt
// in-process cancel of a running job (without waiting for the next heartbeat).
#include <sys/stat.h>
#include <fcntl.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "services/live_control.h"
#include "services/live_follower.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

// Waits (polling) until pred() or the deadline; returns pred()'s last value.
template <typename Pred>
bool WaitFor(Pred pred, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (!pred()) {
    if (absl::Now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

std::unique_ptr<storage::Registry> OpenSecondRegistry(const std::string& data_dir) {
  absl::StatusOr<std::unique_ptr<storage::Registry>> r = storage::Registry::Open(data_dir, {});
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *std::move(r) : nullptr;
}

// The version the server's unpinned Generate for `tenant` is served by (-1 on error).
int64_t ServedVersion(TestServer& server, const std::string& key, const std::string& tenant) {
  v1::GenerateRequest r;
  r.set_tenant_id(tenant);
  r.set_prompt("add(1,2)=");
  r.set_max_tokens(1);
  v1::GenerateResponse resp;
  grpc::Status st = server.Inference()->Generate(Ctx(key).get(), r, &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return st.ok() ? resp.expert_version() : -1;
}

// ---- LiveFollower ---------------------------------------------------------------------------------

TEST(LiveFollowerServerTest, MovesByAnotherProcessReachTheRunningServer) {
  TestServer server(WithModel());
  std::string key = server.CreateTenant("acme");
  ASSERT_EQ(PublishScaledVersion(server.registry(), "acme", {{0, 1}}, 1.5f), 1);
  ASSERT_EQ(PublishScaledVersion(server.registry(), "acme", {{1, 2}}, 0.5f), 2);
  // The runtime has now seen acme (live 0); without the follower it would keep serving 0.
  ASSERT_EQ(ServedVersion(server, key, "acme"), 0);

  std::unique_ptr<storage::Registry> other = OpenSecondRegistry(server.data_dir());
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(other->Promote("acme", 2, "other-process").ok());
  EXPECT_TRUE(WaitFor([&] { return ServedVersion(server, key, "acme") == 2; }, absl::Seconds(60)));

  ASSERT_TRUE(other->Rollback("acme", std::nullopt, "other-process").ok());  // back to 0
  EXPECT_TRUE(WaitFor([&] { return ServedVersion(server, key, "acme") == 0; }, absl::Seconds(60)));

  // A burst mixing the other process's moves with this server's own synchronous Promote: once the
  // follower has consumed the feed, the runtime serves the registry's final live version.
  auto admin = server.Admin();
  ASSERT_TRUE(other->Promote("acme", 1, "other-process").ok());
  v1::PromoteRequest p;
  p.set_tenant_id("acme");
  p.set_version(2);
  v1::LiveVersionResponse live;
  grpc::Status st = admin->Promote(Ctx(server.admin_key()).get(), p, &live);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(ServedVersion(server, key, "acme"), 2);  // the RPC's own path: served on return
  ASSERT_TRUE(other->Promote("acme", 1, "other-process").ok());
  ASSERT_TRUE(other->Promote("acme", 2, "other-process").ok());
  ASSERT_TRUE(other->Rollback("acme", 1, "other-process").ok());
  absl::StatusOr<int64_t> final_seq = other->ChangeSequence();
  ASSERT_TRUE(final_seq.ok());
  ASSERT_NE(server.server().live_follower(), nullptr);
  ASSERT_TRUE(WaitFor([&] { return server.server().live_follower()->cursor() >= *final_seq; },
                      absl::Seconds(60)));
  EXPECT_EQ(*server.registry().GetLive("acme"), 1);
  EXPECT_EQ(ServedVersion(server, key, "acme"), 1);
  EXPECT_NE(server.server().metrics().Render().find("tessera_live_follow_sequence " +
                                                    std::to_string(*final_seq)),
            std::string::npos);
}

// Regression: a deleted tenant's feed rows go with it, so the feed's head can pass the last row. The
// follower's cursor must reach the head (it stayed at the last row, every wait on the feed returned at
// once, and the follower spun until the next change).
TEST(LiveFollowerServerTest, CursorReachesTheHeadPastADeletedTenantsRows) {
  TestServer server(WithModel());
  server.CreateTenant("acme");
  server.CreateTenant("globex");
  ASSERT_EQ(PublishScaledVersion(server.registry(), "globex", {{0, 1}}, 1.5f), 1);
  std::unique_ptr<storage::Registry> other = OpenSecondRegistry(server.data_dir());
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(other->Promote("globex", 1, "other-process").ok());
  ASSERT_TRUE(other->DeleteTenant("globex", "other-process").ok());  // the newest rows are globex's
  const int64_t head = other->ChangeSequence().value();
  ASSERT_TRUE(other->ListChangesSince(0).value().empty() ||
              other->ListChangesSince(0).value().back().seq < head);
  LiveFollower* follower = server.server().live_follower();
  ASSERT_NE(follower, nullptr);
  ASSERT_TRUE(follower->CatchUp().ok());
  EXPECT_EQ(follower->cursor(), head);
  // Nothing new: a wait from the cursor times out instead of returning at once.
  RegistryChangeFeed feed(&server.registry());
  EXPECT_FALSE(feed.WaitForChange(follower->cursor(), absl::Milliseconds(50)).value());
}

// Records what the follower asks the runtime to serve; fails the first `fail_first` calls.
class RecordingEngine final : public InferenceEngine {
 public:
  BackboneInfo Backbone() const override { return {}; }
  absl::StatusOr<GenerateOutput> Generate(const std::string&, std::optional<int64_t>, const GenerateParams&,
                                          const DeltaCallback&) override {
    return absl::UnimplementedError("recording engine");
  }
  absl::StatusOr<ScoreOutput> Score(const std::string&, std::optional<int64_t>, const TextInput&, bool) override {
    return absl::UnimplementedError("recording engine");
  }
  absl::Status ServeLive(const std::string& tenant_id, int64_t version) override {
    std::lock_guard<std::mutex> lock(mu);
    if (fail_first > 0) {
      --fail_first;
      return absl::UnavailableError("simulated load failure");
    }
    calls.push_back({tenant_id, version});
    return absl::OkStatus();
  }
  void ForgetTenant(const std::string&) override {}
  EngineStatus Status() override { return {}; }

  std::vector<std::pair<std::string, int64_t>> Calls() {
    std::lock_guard<std::mutex> lock(mu);
    return calls;
  }
  std::mutex mu;
  int fail_first = 0;
  std::vector<std::pair<std::string, int64_t>> calls;
};

class LiveFollowerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tessera_follower_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    registry_ = OpenSecondRegistry(dir_);
    ASSERT_NE(registry_, nullptr);
    for (const char* t : {"acme", "beta"}) {
      ASSERT_TRUE(registry_->CreateTenant(t, t, "test").ok());
      for (int i = 0; i < 3; ++i) Publish(t);
    }
  }
  void TearDown() override {
    registry_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Publish(const std::string& tenant) {
    absl::StatusOr<std::string> digest = registry_->blobs().Put("weights " + tenant + std::to_string(n_++));
    ASSERT_TRUE(digest.ok());
    storage::NewVersion nv;
    nv.tenant_id = tenant;
    nv.slots_json = "[]";
    nv.blob_digest = *digest;
    ASSERT_TRUE(registry_->PublishVersion(nv, "test").ok());
  }

  std::string dir_;
  int n_ = 0;
  std::unique_ptr<storage::Registry> registry_;
};

TEST_F(LiveFollowerTest, ReplayingOldChangesLateAppliesOnlyTheNewestLiveVersion) {
  // Many moves, as if another process made them while the follower lagged behind.
  ASSERT_TRUE(registry_->Promote("acme", 1, "x").ok());
  ASSERT_TRUE(registry_->Promote("acme", 3, "x").ok());
  ASSERT_TRUE(registry_->Promote("beta", 2, "x").ok());
  ASSERT_TRUE(registry_->Promote("acme", 2, "x").ok());
  ASSERT_TRUE(registry_->Rollback("acme", std::nullopt, "x").ok());  // acme back to 3
  RecordingEngine engine;
  LiveControl live(registry_.get(), &engine);
  LiveFollower follower(registry_.get(), &live, /*from_seq=*/0, {});
  ASSERT_TRUE(follower.CatchUp().ok());
  std::map<std::string, std::vector<int64_t>> served;
  for (auto& [t, v] : engine.Calls()) served[t].push_back(v);
  // One apply per tenant, each the registry's current live version: never 1 or 2 for acme.
  EXPECT_EQ(served["acme"], std::vector<int64_t>({3}));
  EXPECT_EQ(served["beta"], std::vector<int64_t>({2}));
  EXPECT_EQ(follower.cursor(), *registry_->ChangeSequence());

  // Moves made through this process's LiveControl are already served: the follower adds nothing.
  ASSERT_TRUE(live.Promote("beta", 3, "admin").ok());
  ASSERT_TRUE(follower.CatchUp().ok());
  std::vector<std::pair<std::string, int64_t>> calls = engine.Calls();
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls.back(), std::make_pair(std::string("beta"), int64_t{3}));
}

TEST_F(LiveFollowerTest, AFailedApplyIsRetried) {
  RecordingEngine engine;
  engine.fail_first = 1;
  LiveControl live(registry_.get(), &engine);
  LiveFollower::Options o;
  o.retry_interval = absl::ZeroDuration();
  LiveFollower follower(registry_.get(), &live, *registry_->ChangeSequence(), o);
  ASSERT_TRUE(registry_->Promote("acme", 2, "x").ok());
  ASSERT_TRUE(follower.CatchUp().ok());
  EXPECT_TRUE(engine.Calls().empty());  // the failure
  ASSERT_TRUE(follower.CatchUp().ok());  // no new change, but the tenant is due for a retry
  ASSERT_EQ(engine.Calls().size(), 1u);
  EXPECT_EQ(engine.Calls()[0], std::make_pair(std::string("acme"), int64_t{2}));
}

TEST_F(LiveFollowerTest, TheThreadFollowsAndStopsCleanly) {
  RecordingEngine engine;
  LiveControl live(registry_.get(), &engine);
  LiveFollower::Options o;
  o.poll = absl::Milliseconds(50);
  auto follower = std::make_unique<LiveFollower>(registry_.get(), &live, *registry_->ChangeSequence(), o);
  follower->Start();
  // A second registry on the same dir, as another process: only the database tells the follower.
  std::unique_ptr<storage::Registry> other = OpenSecondRegistry(dir_);
  ASSERT_TRUE(other->Promote("beta", 1, "x").ok());
  EXPECT_TRUE(WaitFor([&] { return !engine.Calls().empty(); }, absl::Seconds(60)));
  follower->Stop();
  follower->Stop();  // idempotent
  follower.reset();
  ASSERT_EQ(engine.Calls().size(), 1u);
  EXPECT_EQ(engine.Calls()[0], std::make_pair(std::string("beta"), int64_t{1}));
}

// ---- Blob GC --------------------------------------------------------------------------------------

void Backdate(storage::Registry& registry, const std::string& digest, absl::Duration age) {
  absl::StatusOr<std::string> path = registry.blobs().Path(digest);
  ASSERT_TRUE(path.ok());
  timespec ts = absl::ToTimespec(absl::Now() - age);
  timespec times[2] = {ts, ts};
  ASSERT_EQ(::utimensat(AT_FDCWD, path->c_str(), times, 0), 0) << *path;
}

bool Exists(storage::Registry& registry, const std::string& digest) {
  absl::StatusOr<bool> e = registry.blobs().Exists(digest);
  EXPECT_TRUE(e.ok());
  return e.ok() && *e;
}

TEST(BlobGcTest, CollectsUnreferencedOldBlobsAndKeepsReferencedOnes) {
  TestServerOptions o;
  o.gc_interval = absl::Milliseconds(100);
  o.gc_grace = absl::Hours(1);
  TestServer server(o);
  storage::Registry& reg = server.registry();
  std::string key = server.CreateTenant("acme");
  v1::Dataset ds;
  ASSERT_TRUE(server.Upload(key, "acme", "d", AdditionJsonl(8), &ds).ok());

  // A job running under another process's worker, which has written two checkpoints: the first is
  // superseded (garbage), the second is what the job would resume from (must stay).
  storage::NewJob nj;
  nj.tenant_id = "acme";
  nj.spec = "{}";
  nj.training_dataset_id = ds.dataset_id();
  ASSERT_TRUE(reg.CreateJob(nj, "test").ok());
  absl::StatusOr<std::optional<storage::Job>> claimed = reg.ClaimNextJob("other-worker", absl::Hours(1));
  ASSERT_TRUE(claimed.ok() && claimed->has_value());
  std::string job_id = (*claimed)->job_id;
  std::string ckpt_old = *reg.blobs().Put("checkpoint at step 10");
  storage::JobUpdate u;
  u.checkpoint = ckpt_old;
  ASSERT_TRUE(reg.UpdateRunningJob(job_id, "other-worker", u).ok());
  std::string ckpt_new = *reg.blobs().Put("checkpoint at step 20");
  u.checkpoint = ckpt_new;
  ASSERT_TRUE(reg.UpdateRunningJob(job_id, "other-worker", u).ok());

  std::string stray = *reg.blobs().Put("a blob nothing names");
  std::string fresh = *reg.blobs().Put("a blob nothing names yet (a publish in progress)");
  int64_t version = PublishScaledVersion(reg, "acme", {{0, 1}}, 1.5f);
  ASSERT_EQ(version, 1);
  std::string version_blob = reg.GetVersion("acme", 1)->sha256;
  std::string dataset_blob = ds.sha256();
  for (const std::string& d : {ckpt_old, ckpt_new, stray, version_blob, dataset_blob}) {
    Backdate(reg, d, absl::Hours(2));
  }

  // The periodic collector removes the old unreferenced blobs on its own.
  EXPECT_TRUE(WaitFor([&] { return !Exists(reg, stray) && !Exists(reg, ckpt_old); }, absl::Seconds(60)));
  // One more full round, so every decision below has been made at least once with these mtimes.
  absl::StatusOr<storage::GcStats> stats = server.server().blob_gc().RunOnce();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_FALSE(Exists(reg, stray));
  EXPECT_FALSE(Exists(reg, ckpt_old));
  EXPECT_TRUE(Exists(reg, ckpt_new));      // the unfinished job's checkpoint
  EXPECT_TRUE(Exists(reg, fresh));         // within the grace period
  EXPECT_TRUE(Exists(reg, version_blob));  // referenced by a version row
  EXPECT_TRUE(Exists(reg, dataset_blob));  // referenced by a dataset row
  EXPECT_EQ(stats->blobs_deleted, 0);      // the periodic runs already took the garbage
  EXPECT_GE(stats->blobs_kept_grace, 1);

  // Once the job is over its checkpoint is garbage too.
  storage::JobResult r;
  r.state = storage::JobState::kFailed;
  r.error = "test";
  ASSERT_TRUE(reg.FinishJob(job_id, "other-worker", r).ok());
  Backdate(reg, ckpt_new, absl::Hours(2));
  stats = server.server().blob_gc().RunOnce();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_FALSE(Exists(reg, ckpt_new));
  EXPECT_TRUE(Exists(reg, version_blob));
}

// ---- Prompt in-process cancel -----------------------------------------------------------------------

// A runner that never reports progress (like a long selection or evaluation phase, or a slow step):
// it can learn of a cancel only through ShouldStop, i.e. from the scheduler's signal or a heartbeat.
class SpinRunner final : public JobRunner {
 public:
  absl::StatusOr<JobOutput> Run(JobContext& ctx) override {
    started.fetch_add(1);
    while (!ctx.ShouldStop()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    stopped.fetch_add(1);
    return absl::CancelledError("stopped");
  }
  absl::StatusOr<double> EvaluateVersion(JobContext&, int64_t) override {
    return absl::UnimplementedError("spin runner");
  }
  std::atomic<int> started{0};
  std::atomic<int> stopped{0};
};

TEST(CancelTest, CancellingARunningJobStopsItWithoutWaitingForAHeartbeat) {
  SpinRunner* runner = nullptr;
  TestServerOptions o;
  o.make_runner = [&runner](storage::Registry*) -> absl::StatusOr<std::unique_ptr<JobRunner>> {
    auto r = std::make_unique<SpinRunner>();
    runner = r.get();
    return r;
  };
  // Heartbeats far apart: only the direct signal can stop the job within the bounds below.
  o.job_lease = absl::Minutes(10);
  o.job_heartbeat = absl::Minutes(2);
  TestServer server(o);
  ASSERT_NE(runner, nullptr);
  std::string key = server.CreateTenant("acme");
  v1::Dataset ds;
  ASSERT_TRUE(server.Upload(key, "acme", "d", AdditionJsonl(16), &ds).ok());
  v1::CreateJobRequest req;
  req.set_tenant_id("acme");
  req.set_training_dataset_id(ds.dataset_id());
  req.mutable_hyperparameters()->set_max_steps(10);
  req.mutable_expert_selection()->mutable_explicit_()->add_slots()->set_expert(1);
  v1::Job first, second;
  ASSERT_TRUE(server.FineTuning()->CreateJob(Ctx(key).get(), req, &first).ok());
  ASSERT_TRUE(WaitFor([&] { return runner->started.load() == 1; }, absl::Seconds(60)));
  ASSERT_TRUE(server.FineTuning()->CreateJob(Ctx(key).get(), req, &second).ok());  // waits for the worker

  auto running_here = [&] {
    v1::RuntimeStatus rs;
    grpc::Status st = server.Admin()->GetRuntimeStatus(Ctx(server.admin_key()).get(),
                                                       v1::GetRuntimeStatusRequest(), &rs);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return std::vector<std::string>(rs.running_job_ids().begin(), rs.running_job_ids().end());
  };
  ASSERT_EQ(running_here(), std::vector<std::string>({first.job_id()}));
  v1::CancelJobRequest c;
  c.set_tenant_id("acme");
  c.set_job_id(first.job_id());
  v1::Job cancelled;
  ASSERT_TRUE(server.FineTuning()->CancelJob(Ctx(key).get(), c, &cancelled).ok());
  EXPECT_EQ(cancelled.state(), v1::CANCELLED);
  // Generous against a slow machine, far below the 2-minute heartbeat.
  EXPECT_TRUE(WaitFor([&] { return runner->stopped.load() == 1; }, absl::Seconds(30)));
  // The worker is free: the queued job is claimed and runs (and is cancelled the same way, by an admin).
  EXPECT_TRUE(WaitFor([&] { return running_here() == std::vector<std::string>({second.job_id()}); },
                      absl::Seconds(30)));
  EXPECT_EQ(server.registry().GetJob("acme", first.job_id())->state, storage::JobState::kCancelled);
  c.set_job_id(second.job_id());
  ASSERT_TRUE(server.Admin()->CancelJob(Ctx(server.admin_key()).get(), c, &cancelled).ok());
  EXPECT_TRUE(WaitFor([&] { return runner->stopped.load() == 2 && running_here().empty(); },
                      absl::Seconds(30)));
  EXPECT_EQ(server.registry().GetJob("acme", second.job_id())->state, storage::JobState::kCancelled);
}

}  // namespace
}  // namespace tessera::services::testing
