// Crash injection at every step of the publish path (services/job_scheduler.cc RunJob's end and
// Registry::PublishJobVersion): a job's end must leave exactly one version or none, whatever point the
// process dies at, and a restarted scheduler on the same data dir finishes (or retries) the job without a
// duplicate version.
//
// How: the parent (no threads, no open database while forking) prepares a data dir with one tenant,
// one dataset and one QUEUED job. A forked child runs a JobScheduler (lease 0.5 s) with a runner that
// returns fixed weights at once, first unarmed with tracing on (core/util/crash_point.h), which lists
// every crash point the path passes, in order (the checkpoint blob's, the publish blob's, the registry
// transaction's, the runtime sync's). Then for each passage K of that trace a fresh data dir and a fresh
// child armed to _exit at K; the parent requires that exit (so the point is on the path), then runs a
// second scheduler (another worker id) on the same dir until the job is terminal and checks:
//   - the job SUCCEEDED (not stuck RUNNING, not FAILED), with result_version 1;
//   - exactly one version row, of this job; exactly one "version" event and one publish change;
//   - every version's blob present and its sha256 verified; PRAGMA integrity_check ok;
//   - the live pointer: 1 when the job auto-promotes (the gate passes), 0 otherwise, and it names an
//     existing version.
// Why fork + an armed hook instead of the real tessera-server with a crash flag: arming is a C++ call
// that only tests make, so no production flag or environment variable can make a server crash; and a
// fork with a fake runner reaches every point deterministically in milliseconds, while the real binary
// with real SIGKILLs at random moments is ops/chaos's job (ops/chaos.sh).
//
// Plus the regression of the bug this replaced: a data dir where an older build published the version and
// died before finishing the job (separate transactions) is recovered with that version, not a second.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/util/crash_point.h"
#include "gtest/gtest.h"
#include "services/job_scheduler.h"
#include "services/inference_engine.h"
#include "services/job_spec.h"
#include "services/live_control.h"
#include "services/metrics.h"
#include "storage/registry.h"

namespace tessera::services {
namespace {

constexpr char kTenant[] = "acme";

// Returns fixed weights at once; saves a checkpoint on a first attempt (so the trace covers the
// checkpoint's blob writes too) and finds it on a retry.
class QuickRunner final : public JobRunner {
 public:
  absl::StatusOr<JobOutput> Run(JobContext& ctx) override {
    absl::StatusOr<std::optional<std::string>> ckpt = ctx.LoadCheckpoint();
    if (!ckpt.ok()) return ckpt.status();
    if (!ckpt->has_value()) {
      if (absl::Status s = ctx.SaveCheckpoint(absl::StrCat("checkpoint of ", ctx.job().job_id)); !s.ok()) return s;
    }
    JobOutput o;
    o.weights = absl::StrCat("weights of ", ctx.job().job_id);
    o.slots = {{0, 1}};
    o.val_loss = 1.0;
    o.base_val_loss = 2.0;  // beats the base: the gate promotes when auto_promote is set
    return o;
  }
  absl::StatusOr<double> EvaluateVersion(JobContext&, int64_t) override {
    return absl::FailedPreconditionError("the live version is the job's base here");
  }
};

std::string FreshDir() {
  char tmpl[] = "/tmp/tessera_publish_crash_XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return "";
  return tmpl;
}

// A data dir with one tenant, a dataset and one QUEUED job; returns the job id ("" on error).
std::string Prepare(const std::string& dir, bool auto_promote) {
  absl::StatusOr<std::unique_ptr<storage::Registry>> reg = storage::Registry::Open(dir);
  if (!reg.ok()) return "";
  if (!(*reg)->CreateTenant(kTenant, kTenant, "test").ok()) return "";
  absl::StatusOr<std::string> blob = (*reg)->blobs().Put("{\"prompt\":\"a\",\"completion\":\"b\"}\n");
  if (!blob.ok()) return "";
  storage::NewDataset nd;
  nd.tenant_id = kTenant;
  nd.name = "d";
  nd.format = "jsonl";
  nd.blob_digest = *blob;
  nd.num_examples = 1;
  absl::StatusOr<storage::Dataset> ds = (*reg)->CreateDataset(nd, "test");
  if (!ds.ok()) return "";
  JobSpec spec;
  spec.auto_promote = auto_promote;
  storage::NewJob nj;
  nj.tenant_id = kTenant;
  nj.training_dataset_id = ds->dataset_id;
  nj.spec = spec.ToJson();
  absl::StatusOr<storage::Job> job = (*reg)->CreateJob(nj, "test");
  return job.ok() ? job->job_id : "";
}

// Runs a scheduler as `worker` on `dir` until the job is terminal or `timeout` passes; returns the
// job's final state name ("" on error). `engine`: the runtime LiveControl syncs (null: none).
std::string RunScheduler(const std::string& dir, const std::string& job_id, const std::string& worker,
                         absl::Duration timeout, InferenceEngine* engine = nullptr) {
  storage::Registry::Options ro;
  ro.wait_poll_interval = absl::Milliseconds(20);
  absl::StatusOr<std::unique_ptr<storage::Registry>> reg = storage::Registry::Open(dir, ro);
  if (!reg.ok()) return "";
  QuickRunner runner;
  LiveControl live(reg->get(), engine);
  Metrics metrics;
  JobScheduler::Options so;
  so.lease = absl::Milliseconds(500);
  so.heartbeat_interval = absl::Milliseconds(100);
  so.poll_interval = absl::Milliseconds(20);
  so.worker_id = worker;
  JobScheduler scheduler(reg->get(), &runner, &live, &metrics, so);
  scheduler.Start();
  const absl::Time deadline = absl::Now() + timeout;
  std::string state;
  while (absl::Now() < deadline) {
    absl::StatusOr<storage::Job> j = (*reg)->GetJob("", job_id);
    if (j.ok() && storage::IsTerminal(j->state)) {
      state = std::string(storage::JobStateName(j->state));
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  scheduler.Stop();
  return state;
}

// Forks a child that runs the scheduler (armed at `point`'s `hit`-th passage, or tracing when point is
// empty, writing the trace to `trace_path`); returns its exit code (-1: killed by a signal).
int RunChild(const std::string& dir, const std::string& job_id, const std::string& point, int hit,
             const std::string& trace_path) {
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    if (point.empty()) {
      util::TraceCrashPoints(true);
    } else {
      util::ArmCrashPoint(point, hit);
    }
    const std::string state = RunScheduler(dir, job_id, "crash-child", absl::Seconds(120));
    if (point.empty()) {
      std::ofstream f(trace_path);
      f << absl::StrJoin(util::TracedCrashPoints(), "\n");
      util::TraceCrashPoints(false);
    }
    _exit(state == "SUCCEEDED" ? 0 : 3);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -2;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The invariants after recovery (see the top comment).
void CheckRecovered(const std::string& dir, const std::string& job_id, bool auto_promote) {
  absl::StatusOr<std::unique_ptr<storage::Registry>> reg = storage::Registry::Open(dir);
  ASSERT_TRUE(reg.ok()) << reg.status();
  storage::Registry& r = **reg;
  EXPECT_TRUE(r.CheckIntegrity().ok());
  absl::StatusOr<storage::Job> job = r.GetJob("", job_id);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state, storage::JobState::kSucceeded) << job->error;
  EXPECT_EQ(job->result_version, std::optional<int64_t>(1));
  EXPECT_EQ(job->promoted, auto_promote);
  absl::StatusOr<std::vector<storage::ExpertVersion>> versions = r.ListVersions(kTenant);
  ASSERT_TRUE(versions.ok()) << versions.status();
  ASSERT_EQ(versions->size(), 1u) << "a crash must leave one version or none, and recovery adds none twice";
  for (const storage::ExpertVersion& v : *versions) {
    EXPECT_EQ(v.job_id, job_id);
    EXPECT_TRUE(r.blobs().Verify(v.sha256).ok()) << "version " << v.version << "'s blob";
  }
  absl::StatusOr<int64_t> live = r.GetLive(kTenant);
  ASSERT_TRUE(live.ok());
  EXPECT_EQ(*live, auto_promote ? 1 : 0);
  absl::StatusOr<std::vector<storage::JobEvent>> events = r.ListJobEvents("", job_id, 0);
  ASSERT_TRUE(events.ok());
  int version_events = 0, succeeded_events = 0;
  for (const storage::JobEvent& e : *events) {
    version_events += e.type == "version";
    succeeded_events += e.type == "state" && e.payload.find("\"SUCCEEDED\"") != std::string::npos;
  }
  EXPECT_EQ(version_events, 1);
  EXPECT_EQ(succeeded_events, 1);
  absl::StatusOr<std::vector<storage::Change>> changes = r.ListChangesSince(0);
  ASSERT_TRUE(changes.ok());
  int publishes = 0, promotes = 0;
  for (const storage::Change& c : *changes) {
    publishes += c.kind == storage::ChangeKind::kPublish;
    promotes += c.kind == storage::ChangeKind::kPromote;
  }
  EXPECT_EQ(publishes, 1);
  EXPECT_EQ(promotes, auto_promote ? 1 : 0);
}

void CrashAtEveryPoint(bool auto_promote) {
  // 1. The unarmed path, traced.
  const std::string trace_dir = FreshDir();
  ASSERT_FALSE(trace_dir.empty());
  const std::string traced_job = Prepare(trace_dir, auto_promote);
  ASSERT_FALSE(traced_job.empty());
  const std::string trace_path = trace_dir + "/trace.txt";
  ASSERT_EQ(RunChild(trace_dir, traced_job, "", 0, trace_path), 0);
  std::ifstream f(trace_path);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::vector<std::string> trace = absl::StrSplit(ss.str(), '\n', absl::SkipEmpty());
  std::filesystem::remove_all(trace_dir);
  std::printf("crash points on the path (%zu passages): %s\n", trace.size(), absl::StrJoin(trace, ", ").c_str());
  // The steps this test exists for must be on the path, in this order.
  std::vector<std::string> must = {"publish.trained", "publish.gate_decided", "blob.commit.temp_synced",
                                   "blob.commit.renamed", "publish.blob_stored",
                                   "registry.publish_job.version_row"};
  if (auto_promote) must.push_back("registry.publish_job.live_moved");
  for (const char* p : {"registry.publish_job.job_finished", "publish.committed", "publish.served"}) must.push_back(p);
  size_t at = 0;
  for (const std::string& p : trace) {
    if (at < must.size() && p == must[at]) ++at;
  }
  ASSERT_EQ(at, must.size()) << "trace: " << absl::StrJoin(trace, ", ");

  // 2. A crash at each passage, then recovery and the invariants.
  std::map<std::string, int> seen;
  for (const std::string& point : trace) {
    const int hit = ++seen[point];
    SCOPED_TRACE(absl::StrCat(point, " #", hit, auto_promote ? " (auto_promote)" : ""));
    const std::string dir = FreshDir();
    ASSERT_FALSE(dir.empty());
    const std::string job_id = Prepare(dir, auto_promote);
    ASSERT_FALSE(job_id.empty());
    ASSERT_EQ(RunChild(dir, job_id, point, hit, ""), util::kCrashPointExitCode) << "the point was not reached";
    EXPECT_EQ(RunScheduler(dir, job_id, "recovery", absl::Seconds(120)), "SUCCEEDED");
    CheckRecovered(dir, job_id, auto_promote);
    std::filesystem::remove_all(dir);
  }
}

TEST(PublishCrashTest, EveryPointLeavesOneVersionOrNoneAndRecoveryFinishesTheJob) { CrashAtEveryPoint(true); }

TEST(PublishCrashTest, EveryPointWithoutPromotion) { CrashAtEveryPoint(false); }

// The regression of the bug this replaced: publishing and finishing were separate transactions, and a
// crash between them left a version behind a RUNNING job, whose retry published a second version.
// Reproduce that state (version row of the job, job RUNNING under a dead worker's expired lease) and
// check that recovery finishes the job with the existing version.
TEST(PublishCrashTest, VersionLeftBehindARunningJobIsReusedNotDuplicated) {
  const std::string dir = FreshDir();
  ASSERT_FALSE(dir.empty());
  const std::string job_id = Prepare(dir, true);
  ASSERT_FALSE(job_id.empty());
  {
    absl::StatusOr<std::unique_ptr<storage::Registry>> reg = storage::Registry::Open(dir);
    ASSERT_TRUE(reg.ok());
    absl::StatusOr<std::optional<storage::Job>> claimed = (*reg)->ClaimNextJob("dead-worker", absl::Milliseconds(1));
    ASSERT_TRUE(claimed.ok() && claimed->has_value());
    absl::StatusOr<std::string> blob = (*reg)->blobs().Put("weights published by an older build");
    ASSERT_TRUE(blob.ok());
    storage::NewVersion nv;
    nv.tenant_id = kTenant;
    nv.job_id = job_id;
    nv.slots_json = "[[0,1]]";
    nv.blob_digest = *blob;
    ASSERT_TRUE((*reg)->PublishVersion(nv, "system").ok());
  }
  EXPECT_EQ(RunScheduler(dir, job_id, "recovery", absl::Seconds(120)), "SUCCEEDED");
  absl::StatusOr<std::unique_ptr<storage::Registry>> reg = storage::Registry::Open(dir);
  ASSERT_TRUE(reg.ok());
  absl::StatusOr<std::vector<storage::ExpertVersion>> versions = (*reg)->ListVersions(kTenant);
  ASSERT_TRUE(versions.ok());
  EXPECT_EQ(versions->size(), 1u);
  absl::StatusOr<storage::Job> job = (*reg)->GetJob("", job_id);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state, storage::JobState::kSucceeded);
  EXPECT_EQ(job->result_version, std::optional<int64_t>(1));
  std::filesystem::remove_all(dir);
}

// A runtime that cannot load any version.
class FailingEngine final : public InferenceEngine {
 public:
  BackboneInfo Backbone() const override { return {}; }
  absl::StatusOr<GenerateOutput> Generate(const std::string&, std::optional<int64_t>, const GenerateParams&,
                                          const DeltaCallback&) override {
    return absl::UnimplementedError("not used");
  }
  absl::StatusOr<ScoreOutput> Score(const std::string&, std::optional<int64_t>, const TextInput&, bool) override {
    return absl::UnimplementedError("not used");
  }
  absl::Status ServeLive(const std::string&, int64_t) override {
    ++calls;
    return absl::UnavailableError("simulated load failure");
  }
  void ForgetTenant(const std::string&) override {}
  EngineStatus Status() override { return {}; }
  std::atomic<int> calls{0};
};

// The runtime is told after the commit; when it cannot load the version, the commit stands (the
// registry's pointer is the truth, the LiveFollower retries the load) and the job says so in a log event.
TEST(PublishCrashTest, ARuntimeLoadFailureAfterTheCommitIsReportedNotUndone) {
  const std::string dir = FreshDir();
  ASSERT_FALSE(dir.empty());
  const std::string job_id = Prepare(dir, true);
  ASSERT_FALSE(job_id.empty());
  FailingEngine engine;
  EXPECT_EQ(RunScheduler(dir, job_id, "w", absl::Seconds(120), &engine), "SUCCEEDED");
  EXPECT_GE(engine.calls.load(), 1);
  absl::StatusOr<std::unique_ptr<storage::Registry>> reg = storage::Registry::Open(dir);
  ASSERT_TRUE(reg.ok());
  EXPECT_EQ(*(*reg)->GetLive(kTenant), 1);
  absl::StatusOr<storage::Job> job = (*reg)->GetJob("", job_id);
  ASSERT_TRUE(job.ok());
  EXPECT_TRUE(job->promoted);
  absl::StatusOr<std::vector<storage::JobEvent>> events = (*reg)->ListJobEvents("", job_id, 0);
  ASSERT_TRUE(events.ok());
  bool reported = false;
  for (const storage::JobEvent& e : *events) {
    reported |= e.type == "log" && e.payload.find("could not load it yet") != std::string::npos &&
                e.payload.find("simulated load failure") != std::string::npos;
  }
  EXPECT_TRUE(reported);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tessera::services
