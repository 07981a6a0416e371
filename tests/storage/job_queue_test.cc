// Jobs and the durable job queue: creation and idempotency, scoping, pagination, cancellation,
// claiming with leases, heartbeats, progress, finishing, fairness across tenants, lease expiry
// (requeue then FAIL after N attempts, also at Open; a killed worker process's job reclaimed with its
// checkpoint), and job events (numbering, replay, waiting).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "storage/registry.h"
#include "tests/storage/registry_test_util.h"

namespace tessera::storage {
namespace {

using testing::RegistryTest;

class JobQueueTest : public RegistryTest {
 protected:
  void SetUp() override {
    RegistryTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    MakeTenant("acme");
    MakeTenant("beta");
    acme_ds_ = MakeDataset("acme");
    beta_ds_ = MakeDataset("beta");
  }
  Job Claim(const std::string& worker, absl::Duration lease = absl::Minutes(5)) {
    auto c = reg_->ClaimNextJob(worker, lease);
    EXPECT_TRUE(c.ok()) << c.status();
    EXPECT_TRUE(c.ok() && c->has_value());
    return c.ok() && c->has_value() ? **c : Job();
  }
  std::string acme_ds_, beta_ds_;
};

TEST_F(JobQueueTest, CreateJobIsQueuedWithFirstEvent) {
  NewJob in{"acme", "{\"lr\":0.001}", acme_ds_, "", "", 200};
  auto j = reg_->CreateJob(in, "key-a");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->job_id.rfind("job_", 0), 0u);
  EXPECT_EQ(j->state, JobState::kQueued);
  EXPECT_EQ(j->tenant_id, "acme");
  EXPECT_EQ(j->spec, "{\"lr\":0.001}");
  EXPECT_EQ(j->training_dataset_id, acme_ds_);
  EXPECT_EQ(j->progress.max_steps, 200);
  EXPECT_EQ(j->attempts, 0);
  EXPECT_GT(j->created_at_us, 0);
  EXPECT_EQ(j->started_at_us, 0);
  EXPECT_FALSE(j->result_version.has_value());
  auto events = reg_->ListJobEvents("acme", j->job_id, 0);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].seq, 1);
  EXPECT_EQ((*events)[0].type, "state");
  EXPECT_EQ((*events)[0].payload, "{\"state\":\"QUEUED\"}");
}

TEST_F(JobQueueTest, CreateJobErrors) {
  EXPECT_CODE(reg_->CreateJob(NewJob{"acme", "{}", "", "", "", 0}, "k"), kInvalidArgument);
  EXPECT_CODE(reg_->CreateJob(NewJob{"acme", "{}", "ds_nope", "", "", 0}, "k"), kNotFound);
  // Another tenant's dataset is as good as absent, for training and validation.
  EXPECT_CODE(reg_->CreateJob(NewJob{"acme", "{}", beta_ds_, "", "", 0}, "k"), kNotFound);
  EXPECT_CODE(reg_->CreateJob(NewJob{"acme", "{}", acme_ds_, beta_ds_, "", 0}, "k"), kNotFound);
  EXPECT_CODE(reg_->CreateJob(NewJob{"ghost", "{}", acme_ds_, "", "", 0}, "k"), kNotFound);
  EXPECT_CODE(reg_->CreateJob(NewJob{"acme", "{}", acme_ds_, "", "", -1}, "k"), kInvalidArgument);
  EXPECT_EQ(reg_->ListJobs("acme", 10, "").value().jobs.size(), 0u);
  const std::string val = MakeDataset("acme", "val");
  auto ok = reg_->CreateJob(NewJob{"acme", "{}", acme_ds_, val, "", 0}, "k");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->validation_dataset_id, val);
}

TEST_F(JobQueueTest, IdempotencyKeyReturnsExistingJobPerTenant) {
  const std::string a = MakeJob("acme", acme_ds_, "req-1");
  const std::string a2 = MakeJob("acme", acme_ds_, "req-1");
  EXPECT_EQ(a, a2);
  EXPECT_EQ(reg_->GetJob("acme", a).value().idempotency_key, "req-1");
  const std::string b = MakeJob("beta", beta_ds_, "req-1");  // same key, other tenant: new job
  EXPECT_NE(a, b);
  const std::string c = MakeJob("acme", acme_ds_, "req-2");
  EXPECT_NE(a, c);
  // Without a key, every call makes a new job.
  EXPECT_NE(MakeJob("acme", acme_ds_), MakeJob("acme", acme_ds_));
  EXPECT_EQ(reg_->CountJobs("acme", JobState::kQueued).value(), 4);
  // Still the same job after it finished.
  ASSERT_OK(reg_->CancelJob("acme", a, "k"));
  auto again = reg_->CreateJob(NewJob{"acme", "{}", acme_ds_, "", "req-1", 0}, "k");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->job_id, a);
  EXPECT_EQ(again->state, JobState::kCancelled);
}

TEST_F(JobQueueTest, GetJobIsTenantScoped) {
  const std::string a = MakeJob("acme", acme_ds_);
  EXPECT_TRUE(reg_->GetJob("acme", a).ok());
  auto leak = reg_->GetJob("beta", a);
  EXPECT_CODE(leak, kNotFound);
  EXPECT_EQ(leak.status().message().find("acme"), std::string::npos);
  EXPECT_TRUE(reg_->GetJob("", a).ok());  // admin scope
  EXPECT_CODE(reg_->GetJob("acme", "job_missing"), kNotFound);
  EXPECT_CODE(reg_->CancelJob("beta", a, "k"), kNotFound);
  EXPECT_CODE(reg_->ListJobEvents("beta", a, 0), kNotFound);
  EXPECT_EQ(reg_->GetJob("acme", a).value().state, JobState::kQueued);
}

TEST_F(JobQueueTest, ListJobsNewestFirstWithPages) {
  std::vector<std::string> acme_jobs;
  for (int i = 0; i < 7; ++i) {
    acme_jobs.push_back(MakeJob("acme", acme_ds_));
    MakeJob("beta", beta_ds_);
  }
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    auto page = reg_->ListJobs("acme", 3, token);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const Job& j : page->jobs) {
      EXPECT_EQ(j.tenant_id, "acme");
      seen.push_back(j.job_id);
    }
    token = page->next_page_token;
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  std::vector<std::string> want(acme_jobs.rbegin(), acme_jobs.rend());
  EXPECT_EQ(seen, want);
  // All tenants (admin), exact page size boundary: no token after the last full page.
  auto all = reg_->ListJobs("", 14, "");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->jobs.size(), 14u);
  EXPECT_TRUE(all->next_page_token.empty());
  EXPECT_EQ(all->jobs.front().tenant_id, "beta");
  EXPECT_EQ(reg_->ListJobs("", 0, "").value().jobs.size(), 14u);  // default page size 50
  EXPECT_CODE(reg_->ListJobs("acme", 3, "garbage"), kInvalidArgument);
  EXPECT_CODE(reg_->ListJobs("acme", 3, "j-5"), kInvalidArgument);
  EXPECT_CODE(reg_->ListJobs("ghost", 3, ""), kNotFound);
}

TEST_F(JobQueueTest, ClaimHeartbeatProgressFinish) {
  EXPECT_FALSE(reg_->ClaimNextJob("w1", absl::Minutes(1)).value().has_value());  // empty queue
  const std::string id = MakeJob("acme", acme_ds_);
  const int64_t before = NowMicros();
  Job j = Claim("w1", absl::Minutes(1));
  EXPECT_EQ(j.job_id, id);
  EXPECT_EQ(j.state, JobState::kRunning);
  EXPECT_EQ(j.attempts, 1);
  EXPECT_EQ(j.lease_owner, "w1");
  EXPECT_GE(j.started_at_us, before);
  EXPECT_GE(j.lease_expires_at_us, before + 59 * 1000000LL);
  EXPECT_FALSE(reg_->ClaimNextJob("w2", absl::Minutes(1)).value().has_value());

  // Heartbeat renews; another worker cannot.
  ASSERT_OK(reg_->Heartbeat(id, "w1", absl::Minutes(10)));
  EXPECT_GE(reg_->GetJob("acme", id).value().lease_expires_at_us, before + 9 * 60 * 1000000LL);
  EXPECT_CODE(reg_->Heartbeat(id, "w2", absl::Minutes(1)), kFailedPrecondition);
  EXPECT_CODE(reg_->Heartbeat(id, "w1", absl::ZeroDuration()), kInvalidArgument);
  EXPECT_CODE(reg_->Heartbeat("job_missing", "w1", absl::Minutes(1)), kNotFound);
  EXPECT_CODE(reg_->ClaimNextJob("", absl::Minutes(1)), kInvalidArgument);

  JobUpdate upd;
  upd.progress = JobProgress{5, 10, 2.5, 2.75, 1234.5};
  upd.selected_slots = "[[1,2]]";
  upd.checkpoint = "sha-of-ckpt";
  ASSERT_OK(reg_->UpdateRunningJob(id, "w1", upd));
  EXPECT_CODE(reg_->UpdateRunningJob(id, "w2", upd), kFailedPrecondition);
  Job mid = reg_->GetJob("acme", id).value();
  EXPECT_EQ(mid.progress.step, 5);
  EXPECT_EQ(mid.progress.max_steps, 10);
  EXPECT_DOUBLE_EQ(mid.progress.train_loss, 2.5);
  EXPECT_DOUBLE_EQ(mid.progress.val_loss, 2.75);
  EXPECT_DOUBLE_EQ(mid.progress.tokens_per_second, 1234.5);
  EXPECT_EQ(mid.selected_slots, "[[1,2]]");
  EXPECT_EQ(mid.checkpoint, "sha-of-ckpt");
  // A partial update leaves other fields alone.
  ASSERT_OK(reg_->UpdateRunningJob(id, "w1", JobUpdate{std::nullopt, "[[3,4]]", std::nullopt}));
  EXPECT_EQ(reg_->GetJob("acme", id).value().progress.step, 5);

  const int64_t v = Publish("acme", 0, id);
  EXPECT_CODE(reg_->FinishJob(id, "w1", JobResult{JobState::kSucceeded, "", 99, false}), kNotFound);
  EXPECT_CODE(reg_->FinishJob(id, "w1", JobResult{JobState::kFailed, "", std::nullopt, false}),
              kInvalidArgument);
  EXPECT_CODE(reg_->FinishJob(id, "w1", JobResult{JobState::kCancelled, "", std::nullopt, false}),
              kInvalidArgument);
  EXPECT_CODE(reg_->FinishJob(id, "w2", JobResult{JobState::kSucceeded, "", v, true}),
              kFailedPrecondition);
  auto done = reg_->FinishJob(id, "w1", JobResult{JobState::kSucceeded, "", v, true});
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state, JobState::kSucceeded);
  EXPECT_EQ(done->result_version, v);
  EXPECT_TRUE(done->promoted);
  EXPECT_GE(done->finished_at_us, done->started_at_us);
  EXPECT_EQ(done->lease_owner, "");
  // Terminal: nothing more.
  EXPECT_CODE(reg_->FinishJob(id, "w1", JobResult{JobState::kSucceeded, "", v, true}),
              kFailedPrecondition);
  EXPECT_CODE(reg_->CancelJob("acme", id, "k"), kFailedPrecondition);
  EXPECT_CODE(reg_->Heartbeat(id, "w1", absl::Minutes(1)), kFailedPrecondition);

  auto events = reg_->ListJobEvents("acme", id, 0).value();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[1].payload, "{\"state\":\"RUNNING\",\"previous\":\"QUEUED\"}");
  EXPECT_EQ(events[2].payload, "{\"state\":\"SUCCEEDED\",\"previous\":\"RUNNING\"}");
}

TEST_F(JobQueueTest, FailedJobRecordsError) {
  const std::string id = MakeJob("acme", acme_ds_);
  Claim("w1");
  auto failed = reg_->FinishJob(id, "w1", JobResult{JobState::kFailed, "out of \"memory\"", {}, false});
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_EQ(failed->state, JobState::kFailed);
  EXPECT_EQ(failed->error, "out of \"memory\"");
  EXPECT_EQ(reg_->ListJobEvents("acme", id, 2).value()[0].payload,
            "{\"state\":\"FAILED\",\"previous\":\"RUNNING\",\"error\":\"out of \\\"memory\\\"\"}");
  // FailQueuedJob only for QUEUED jobs.
  EXPECT_CODE(reg_->FailQueuedJob(id, "bad spec", "scheduler"), kFailedPrecondition);
  const std::string q = MakeJob("acme", acme_ds_);
  EXPECT_CODE(reg_->FailQueuedJob(q, "", "scheduler"), kInvalidArgument);
  auto f = reg_->FailQueuedJob(q, "bad spec", "scheduler");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->state, JobState::kFailed);
  EXPECT_EQ(f->error, "bad spec");
}

TEST_F(JobQueueTest, CancelQueuedAndRunning) {
  const std::string queued = MakeJob("acme", acme_ds_);
  auto c = reg_->CancelJob("acme", queued, "key-a");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->state, JobState::kCancelled);
  EXPECT_GT(c->finished_at_us, 0);
  EXPECT_FALSE(reg_->ClaimNextJob("w", absl::Minutes(1)).value().has_value());

  const std::string running = MakeJob("acme", acme_ds_);
  Claim("w");
  auto rc = reg_->CancelJob("", running, "admin");  // admin scope
  ASSERT_TRUE(rc.ok());
  EXPECT_EQ(rc->state, JobState::kCancelled);
  EXPECT_EQ(rc->lease_owner, "");
  // The worker learns it from its next heartbeat / update / finish.
  EXPECT_CODE(reg_->Heartbeat(running, "w", absl::Minutes(1)), kFailedPrecondition);
  EXPECT_CODE(reg_->UpdateRunningJob(running, "w", JobUpdate{}), kFailedPrecondition);
  EXPECT_CODE(reg_->FinishJob(running, "w", JobResult{}), kFailedPrecondition);
  EXPECT_CODE(reg_->CancelJob("acme", running, "k"), kFailedPrecondition);
  EXPECT_EQ(reg_->GetJob("acme", running).value().state, JobState::kCancelled);
  EXPECT_EQ(reg_->CountJobs("", JobState::kCancelled).value(), 2);
}

TEST_F(JobQueueTest, FairClaimDoesNotStarveSmallTenant) {
  for (int i = 0; i < 100; ++i) MakeJob("acme", acme_ds_);
  const std::string beta_job = MakeJob("beta", beta_ds_);  // queued after all of acme's
  // acme has been waiting longer, so it may go first; beta must come second at the latest.
  Job first = Claim("w1");
  Job second = Claim("w2");
  EXPECT_TRUE(first.job_id == beta_job || second.job_id == beta_job);
  // Within a tenant, oldest first.
  const std::string oldest_acme = reg_->ListJobs("acme", 1000, "").value().jobs.back().job_id;
  EXPECT_TRUE(first.job_id == oldest_acme || second.job_id == oldest_acme);
}

TEST_F(JobQueueTest, ClaimPrefersTenantWithFewerRunningThenRoundRobin) {
  MakeTenant("gamma");
  const std::string gamma_ds = MakeDataset("gamma");
  for (int i = 0; i < 5; ++i) {
    MakeJob("acme", acme_ds_);
    MakeJob("beta", beta_ds_);
    MakeJob("gamma", gamma_ds);
  }
  std::vector<std::string> order;
  for (int i = 0; i < 9; ++i) order.push_back(Claim(absl::StrCat("w", i)).tenant_id);
  // Each round of three serves each tenant once.
  for (int round = 0; round < 3; ++round) {
    std::set<std::string> tenants(order.begin() + 3 * round, order.begin() + 3 * round + 3);
    EXPECT_EQ(tenants.size(), 3u) << "round " << round;
  }
  // With a job finished for acme only, acme has the fewest running and goes next.
  Job acme_running = reg_->ListJobs("acme", 1000, "").value().jobs.back();
  ASSERT_EQ(acme_running.state, JobState::kRunning);
  ASSERT_OK(reg_->FinishJob(acme_running.job_id, acme_running.lease_owner,
                            JobResult{JobState::kSucceeded, "", std::nullopt, false}));
  EXPECT_EQ(Claim("w-next").tenant_id, "acme");
}

TEST_F(JobQueueTest, ExpiredLeasesAreRequeuedThenFailed) {
  const std::string id = MakeJob("acme", acme_ds_);
  Claim("w1", absl::Milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  auto n = reg_->RequeueExpiredLeases(3);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 1);
  Job j = reg_->GetJob("acme", id).value();
  EXPECT_EQ(j.state, JobState::kQueued);
  EXPECT_EQ(j.lease_owner, "");
  EXPECT_EQ(j.attempts, 1);
  // The old worker has lost it.
  EXPECT_CODE(reg_->Heartbeat(id, "w1", absl::Minutes(1)), kFailedPrecondition);

  Job again = Claim("w2", absl::Milliseconds(1));
  EXPECT_EQ(again.job_id, id);
  EXPECT_EQ(again.attempts, 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(reg_->RequeueExpiredLeases(3).value(), 1);
  Claim("w3", absl::Milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(reg_->RequeueExpiredLeases(3).value(), 1);
  j = reg_->GetJob("acme", id).value();
  EXPECT_EQ(j.state, JobState::kFailed);
  EXPECT_EQ(j.attempts, 3);
  EXPECT_NE(j.error.find("lease"), std::string::npos);
  EXPECT_NE(j.error.find("w3"), std::string::npos);
  EXPECT_EQ(reg_->RequeueExpiredLeases(3).value(), 0);
  // A live lease is untouched.
  const std::string live = MakeJob("acme", acme_ds_);
  Claim("w4", absl::Minutes(5));
  EXPECT_EQ(reg_->RequeueExpiredLeases(3).value(), 0);
  EXPECT_EQ(reg_->GetJob("acme", live).value().state, JobState::kRunning);

  std::vector<std::string> states;
  const std::vector<JobEvent> events = reg_->ListJobEvents("acme", id, 0).value();
  for (const JobEvent& e : events) states.push_back(e.payload);
  EXPECT_EQ(states.size(), 7u);  // QUEUED, (RUNNING, QUEUED) x2, RUNNING, FAILED
}

TEST_F(JobQueueTest, OpenRequeuesJobsOfACrashedServer) {
  const std::string id = MakeJob("acme", acme_ds_);
  Claim("crashed-worker", absl::Milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  Reopen();  // a restart: no job stays RUNNING with a dead lease
  EXPECT_EQ(reg_->GetJob("acme", id).value().state, JobState::kQueued);
  Registry::Options one_attempt;
  one_attempt.max_job_attempts = 1;
  Claim("crashed-again", absl::Milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  Reopen(one_attempt);
  Job j = reg_->GetJob("acme", id).value();
  EXPECT_EQ(j.state, JobState::kFailed);
  EXPECT_FALSE(j.error.empty());
}

TEST_F(JobQueueTest, DeadWorkerProcessesJobIsReclaimedWithItsCheckpoint) {
  const std::string id = MakeJob("acme", acme_ds_);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The worker: claims with a short lease, trains a while (progress + checkpoint), then hangs until
    // it is killed -- a dead host, which never finishes the job nor renews its lease.
    ::close(fds[0]);
    auto reg = Registry::Open(dir_.path(), DbOptions());
    if (!reg.ok()) _exit(2);
    auto claimed = (*reg)->ClaimNextJob("worker-dead", absl::Milliseconds(800));
    if (!claimed.ok() || !claimed->has_value() || (*claimed)->job_id != id) _exit(3);
    JobUpdate update;
    update.progress = JobProgress{7, 10, 0.5, 0.6, 100.0};
    update.checkpoint = "ckpt-step-7";
    if (!(*reg)->UpdateRunningJob(id, "worker-dead", update).ok()) _exit(4);
    if (!(*reg)->Heartbeat(id, "worker-dead", absl::Milliseconds(800)).ok()) _exit(5);
    if (::write(fds[1], "ok", 2) != 2) _exit(6);
    ::pause();
    _exit(0);
  }
  ::close(fds[1]);
  char buf[2] = {0, 0};
  ASSERT_EQ(::read(fds[0], buf, 2), 2);
  ::close(fds[0]);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << status;
  EXPECT_EQ(reg_->GetJob("acme", id).value().state, JobState::kRunning);
  // Nothing is reclaimed while the lease runs; once it expired, the periodic requeue (the scheduler's
  // job, any process) puts the job back.
  int64_t requeued = 0;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (requeued == 0 && absl::Now() < deadline) {
    requeued = reg_->RequeueExpiredLeases().value();
    if (requeued == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(requeued, 1);
  // Another worker (this process) claims it: a retry that resumes from the dead worker's checkpoint.
  Job again = Claim("worker-live");
  EXPECT_EQ(again.job_id, id);
  EXPECT_EQ(again.attempts, 2);
  EXPECT_EQ(again.checkpoint, "ckpt-step-7");
  EXPECT_EQ(again.progress.step, 7);
  // The dead worker, were it to come back, has lost the job.
  EXPECT_CODE(reg_->Heartbeat(id, "worker-dead", absl::Minutes(1)), kFailedPrecondition);
  ASSERT_OK(reg_->FinishJob(id, "worker-live", JobResult{JobState::kSucceeded, "", std::nullopt, false}));
}

TEST_F(JobQueueTest, EventsAreNumberedAndReplayable) {
  const std::string id = MakeJob("acme", acme_ds_);
  for (int i = 0; i < 5; ++i) {
    auto seq = reg_->AppendJobEvent(id, "progress", "{\"step\":" + std::to_string(i) + "}");
    ASSERT_TRUE(seq.ok()) << seq.status();
    EXPECT_EQ(*seq, i + 2);  // seq 1 is the QUEUED event
  }
  EXPECT_EQ(reg_->AppendJobEvent(id, "note", "").value(), 7);
  EXPECT_CODE(reg_->AppendJobEvent(id, "", "{}"), kInvalidArgument);
  EXPECT_CODE(reg_->AppendJobEvent("job_missing", "x", "{}"), kNotFound);
  auto all = reg_->ListJobEvents("acme", id, 0).value();
  ASSERT_EQ(all.size(), 7u);
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].seq, static_cast<int64_t>(i + 1));
  EXPECT_EQ(all[6].payload, "{}");
  auto tail = reg_->ListJobEvents("acme", id, 4).value();
  ASSERT_EQ(tail.size(), 3u);
  EXPECT_EQ(tail[0].seq, 5);
  EXPECT_EQ(tail[0].payload, "{\"step\":3}");
  EXPECT_EQ(reg_->ListJobEvents("acme", id, 0, 2).value().size(), 2u);
  EXPECT_TRUE(reg_->ListJobEvents("acme", id, 7).value().empty());
  // Events of different jobs are numbered independently.
  const std::string other = MakeJob("acme", acme_ds_);
  EXPECT_EQ(reg_->AppendJobEvent(other, "x", "{}").value(), 2);
}

TEST_F(JobQueueTest, WaitForJobEventsWakesAndTimesOut) {
  const std::string id = MakeJob("acme", acme_ds_);
  EXPECT_TRUE(reg_->WaitForJobEvents(id, 0, absl::ZeroDuration()).value());
  EXPECT_FALSE(reg_->WaitForJobEvents(id, 1, absl::Milliseconds(20)).value());
  EXPECT_CODE(reg_->WaitForJobEvents("job_missing", 0, absl::Milliseconds(1)), kNotFound);
  std::thread appender([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_OK(reg_->AppendJobEvent(id, "progress", "{}"));
  });
  auto woke = reg_->WaitForJobEvents(id, 1, absl::Seconds(20));
  appender.join();
  ASSERT_TRUE(woke.ok());
  EXPECT_TRUE(*woke);
  EXPECT_EQ(reg_->ListJobEvents("acme", id, 1).value().size(), 1u);
}

TEST_F(JobQueueTest, CountJobs) {
  MakeJob("acme", acme_ds_);
  MakeJob("acme", acme_ds_);
  MakeJob("beta", beta_ds_);
  Claim("w");
  EXPECT_EQ(reg_->CountJobs("", JobState::kQueued).value() +
                reg_->CountJobs("", JobState::kRunning).value(),
            3);
  EXPECT_EQ(reg_->CountJobs("", JobState::kRunning).value(), 1);
  EXPECT_EQ(reg_->CountJobs("beta", JobState::kSucceeded).value(), 0);
}

}  // namespace
}  // namespace tessera::storage
