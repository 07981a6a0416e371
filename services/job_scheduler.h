// JobScheduler: runs fine-tuning jobs from the registry's durable queue.
//
// A dispatcher thread claims QUEUED jobs (Registry::ClaimNextJob: fair across tenants) while fewer than
// max_concurrent_jobs run, and gives each to a worker thread that calls the JobRunner. While a job runs,
// a heartbeat renews its lease; if the renewal is refused (the job was cancelled, or its lease expired
// and it was requeued elsewhere) the runner is told to stop and nothing more is written for it.
// Expired leases of crashed workers are requeued periodically (RequeueExpiredLeases), and a requeued
// job resumes from its checkpoint. On success the worker stores the weights (blob first), then in ONE
// registry transaction (Registry::PublishJobVersion) publishes the version row, moves the live pointer to
// it when auto_promote is set, its validation loss beats the live version's on the same data and its
// general-ability loss rose by at most the job's max_general_regression relative to the backbone's (the
// gate; decided before publishing, recorded on the version with its reason), appends the "version" event
// and marks the job SUCCEEDED; then the runtime loads the new live version (LiveControl::Resync). A crash
// anywhere on that path leaves one version or none, and a job that a crashed server left RUNNING is
// requeued when its lease expires and retried without publishing a duplicate (tests/services/
// publish_crash_test.cc crashes at every step of it).
//
// Cancellation: a cancel made through this process (FineTuning/Admin CancelJob) calls NotifyCancelled,
// which stops the job's runner at its next step instead of at the next heartbeat (up to lease/6 later);
// a cancel made by another process is still learnt from the refused heartbeat.
//
// Stop(): no new claims; running jobs are interrupted and their leases released (expired at once), so the
// next server on the same data dir requeues them at start and they resume from their last checkpoint.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "services/job_runner.h"
#include "services/live_control.h"
#include "services/metrics.h"
#include "storage/registry.h"

namespace tessera::services {

class JobScheduler {
 public:
  struct Options {
    int max_concurrent_jobs = 1;
    absl::Duration lease = absl::Seconds(30);
    absl::Duration heartbeat_interval = absl::Seconds(5);
    absl::Duration poll_interval = absl::Milliseconds(500);
    std::string worker_id;  // empty: "server-<pid>-<random>"
    // The promotion gate's bound for jobs that set no max_general_regression (tessera-server
    // --max-general-regression): the largest relative increase of the general-ability loss; < 0: none
    // (the default: fine-tunes at the defaults raise builtin:tiny's mixture loss by 150-500%, see
    // ops/bench/RESULTS.md, so any small bound would block every one; the numbers are still recorded).
    double max_general_regression = -1;
  };

  JobScheduler(storage::Registry* registry, JobRunner* runner, LiveControl* live, Metrics* metrics,
               Options options);
  ~JobScheduler();

  void Start();
  void Stop();
  // Wakes the dispatcher (a job was queued).
  void Wake();
  // The registry already marked `job_id` CANCELLED: if it runs here, its runner stops at its next step
  // and nothing more is written for it. No-op for jobs not running in this process.
  void NotifyCancelled(const std::string& job_id);

  std::vector<std::string> RunningJobIds();
  const std::string& worker_id() const { return options_.worker_id; }

 private:
  class Context;
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
    std::shared_ptr<std::atomic<bool>> cancelled;  // set by NotifyCancelled, read by the job's Context
  };
  void DispatchLoop();
  void RunJob(storage::Job job, std::shared_ptr<std::atomic<bool>> cancelled);
  void Finish(Context& ctx, const storage::JobResult& result);
  void ReapFinished();

  storage::Registry* registry_;
  JobRunner* runner_;
  LiveControl* live_;
  Metrics* metrics_;
  Options options_;

  // Lock order: claim_mu_, then mu_; the registry's own locks are taken inside claim_mu_ (ClaimNextJob),
  // never inside mu_, and neither is taken while holding a registry lock.
  // claim_mu_: held across a claim and its worker's registration (DispatchLoop), and by RunningJobIds and
  // NotifyCancelled, so they never miss a job the registry already marked RUNNING here.
  std::mutex claim_mu_;
  // mu_: guards wake_ and workers_.
  std::mutex mu_;
  std::condition_variable cv_;
  bool wake_ = false;
  std::atomic<bool> stopping_{false};
  std::thread dispatcher_;
  std::map<std::string, Worker> workers_;  // job_id -> worker
};

}  // namespace tessera::services
