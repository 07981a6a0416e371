#include "services/job_scheduler.h"

#include <unistd.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "services/convert.h"
#include "services/log.h"
#include "services/memory_trim.h"
#include "services/version_backbone.h"
#include "core/util/crash_point.h"
#include "storage/random_id.h"

namespace tessera::services {

// The JobContext of one running job: reporting goes to the registry (job row + events).
class JobScheduler::Context : public JobContext {
 public:
  Context(JobScheduler* s, storage::Job job, JobSpec spec, std::shared_ptr<std::atomic<bool>> cancelled)
      : s_(s), job_(std::move(job)), spec_(std::move(spec)), start_(absl::Now()),
        cancelled_(std::move(cancelled)) {}

  const storage::Job& job() const override { return job_; }
  const JobSpec& spec() const override { return spec_; }
  bool ShouldStop() override { return lost() || s_->stopping_.load(); }
  // A local cancel is a lost job too: the registry row is already CANCELLED, so nothing is written.
  bool lost() const { return lost_.load() || cancelled_->load(); }
  void MarkLost() { lost_.store(true); }

  absl::StatusOr<std::string> ReadDataset(const std::string& dataset_id) override {
    absl::StatusOr<storage::Dataset> d = s_->registry_->GetDataset(job_.tenant_id, dataset_id);
    if (!d.ok()) return d.status();
    return s_->registry_->blobs().Get(d->sha256);
  }
  absl::StatusOr<std::string> ReadVersionWeights(int64_t version, const std::string& backbone_sha256) override {
    absl::StatusOr<storage::ExpertVersion> v = s_->registry_->GetVersion(job_.tenant_id, version);
    if (!v.ok()) return v.status();
    absl::StatusOr<std::string> trained_on = VersionBackboneSha256(*s_->registry_, *v);
    if (!trained_on.ok()) return trained_on.status();
    if (absl::Status s = CheckSameBackbone(*v, *trained_on, backbone_sha256); !s.ok()) return s;
    return s_->registry_->blobs().Get(v->sha256);
  }
  void ReportSelection(const std::vector<SlotId>& slots, const std::vector<double>& scores) override {
    storage::JobUpdate u;
    u.selected_slots = SlotsToJson(slots);
    Update(u);
    Append("selection", SelectionEventJson(slots, scores));
  }
  void ReportProgress(const storage::JobProgress& p) override {
    storage::JobUpdate u;
    u.progress = p;
    Update(u);
    double eta = 0;
    if (p.step > 0 && p.max_steps > p.step) {
      double per_step = absl::ToDoubleSeconds(absl::Now() - start_) / (p.step - first_step_);
      eta = per_step * (p.max_steps - p.step);
    }
    Append("progress", ProgressEventJson(p, eta));
    s_->metrics_->Set("tessera_job_step", {{"job_id", job_.job_id}, {"tenant", job_.tenant_id}},
                      static_cast<double>(p.step));
    s_->metrics_->Set("tessera_job_train_loss", {{"job_id", job_.job_id}, {"tenant", job_.tenant_id}},
                      p.train_loss);
  }
  void ReportEval(int64_t step, double val_loss, double base_val_loss) override {
    Append("eval", EvalEventJson(step, val_loss, base_val_loss));
  }
  void Log(const std::string& message) override { Append("log", LogEventJson(message)); }

  absl::Status SaveCheckpoint(std::string_view bytes) override {
    absl::StatusOr<std::string> digest = s_->registry_->blobs().Put(bytes);
    if (!digest.ok()) return digest.status();
    storage::JobUpdate u;
    u.checkpoint = *digest;
    return s_->registry_->UpdateRunningJob(job_.job_id, s_->options_.worker_id, u);
  }
  absl::StatusOr<std::optional<std::string>> LoadCheckpoint() override {
    if (job_.checkpoint.empty()) return std::optional<std::string>();
    absl::StatusOr<std::string> bytes = s_->registry_->blobs().Get(job_.checkpoint);
    if (!bytes.ok()) return bytes.status();
    return std::optional<std::string>(*std::move(bytes));
  }

  // The first step reported in this attempt (a resumed job starts past 0): the ETA's origin.
  void SetFirstStep(int64_t step) { first_step_ = step; }

 private:
  void Update(const storage::JobUpdate& u) {
    absl::Status s = s_->registry_->UpdateRunningJob(job_.job_id, s_->options_.worker_id, u);
    if (s.code() == absl::StatusCode::kFailedPrecondition) MarkLost();
  }
  void Append(const std::string& type, const std::string& payload) {
    absl::StatusOr<int64_t> seq = s_->registry_->AppendJobEvent(job_.job_id, type, payload);
    if (!seq.ok()) {
      LogWarn("could not append job event", {{"job_id", job_.job_id}, {"error", seq.status().ToString()}});
    }
  }

  JobScheduler* s_;
  storage::Job job_;
  JobSpec spec_;
  absl::Time start_;
  int64_t first_step_ = 0;
  std::atomic<bool> lost_{false};
  std::shared_ptr<std::atomic<bool>> cancelled_;
};

JobScheduler::JobScheduler(storage::Registry* registry, JobRunner* runner, LiveControl* live,
                           Metrics* metrics, Options options)
    : registry_(registry), runner_(runner), live_(live), metrics_(metrics), options_(std::move(options)) {
  if (options_.worker_id.empty()) {
    absl::StatusOr<std::string> r = storage::RandomBase62(8);
    options_.worker_id = absl::StrCat("server-", getpid(), "-", r.ok() ? *r : "x");
  }
  if (options_.max_concurrent_jobs < 1) options_.max_concurrent_jobs = 1;
  metrics_->Describe("tessera_job_step", "gauge", "Current step of each running job.");
  metrics_->Describe("tessera_job_train_loss", "gauge", "Latest training loss of each running job.");
  metrics_->Describe("tessera_jobs_finished_total", "counter", "Jobs finished by this server, by state.");
}

JobScheduler::~JobScheduler() { Stop(); }

void JobScheduler::Start() {
  dispatcher_ = std::thread([this] { DispatchLoop(); });
}

void JobScheduler::Wake() {
  std::lock_guard<std::mutex> lock(mu_);
  wake_ = true;
  cv_.notify_all();
}

void JobScheduler::Stop() {
  if (stopping_.exchange(true)) return;
  Wake();
  if (dispatcher_.joinable()) dispatcher_.join();
  std::map<std::string, Worker> workers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    workers.swap(workers_);
  }
  for (auto& [id, w] : workers) {
    if (w.thread.joinable()) w.thread.join();
  }
}

void JobScheduler::NotifyCancelled(const std::string& job_id) {
  std::lock_guard<std::mutex> claim_lock(claim_mu_);  // a claim in progress registers its worker first
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(job_id);
  if (it == workers_.end() || it->second.done->load()) return;
  it->second.cancelled->store(true);
  LogInfo("running job cancelled: stopping its runner", {{"job_id", job_id}});
}

std::vector<std::string> JobScheduler::RunningJobIds() {
  std::lock_guard<std::mutex> claim_lock(claim_mu_);  // a claim in progress registers its worker first
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> ids;
  for (const auto& [id, w] : workers_) {
    if (!w.done->load()) ids.push_back(id);
  }
  return ids;
}

void JobScheduler::ReapFinished() {
  std::vector<std::thread> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = workers_.begin(); it != workers_.end();) {
      if (it->second.done->load()) {
        done.push_back(std::move(it->second.thread));
        it = workers_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& t : done) t.join();
  if (!done.empty()) ReleaseFreeMemory();  // the jobs' training memory (services/memory_trim.h)
}

void JobScheduler::DispatchLoop() {
  absl::Time next_requeue = absl::InfinitePast();
  while (!stopping_.load()) {
    ReapFinished();
    if (absl::Now() >= next_requeue) {
      absl::StatusOr<int64_t> n = registry_->RequeueExpiredLeases();
      if (n.ok() && *n > 0) LogInfo("requeued jobs with expired leases", {{"count", *n}});
      next_requeue = absl::Now() + options_.lease / 2;
    }
    size_t running;
    {
      std::lock_guard<std::mutex> lock(mu_);
      running = workers_.size();
    }
    bool claimed = false;
    if (running < static_cast<size_t>(options_.max_concurrent_jobs)) {
      // The claim (the registry marks the job RUNNING) and the worker's registration happen under
      // claim_mu_, so whoever saw the job running in the registry and then asks this scheduler
      // (RunningJobIds: a forced tenant deletion waits for the job to stop; NotifyCancelled: a cancel)
      // finds its worker. Before, a cancel or deletion in between found none, and the job started
      // afterwards. mu_ is not held across the registry call, so Wake never waits on the database.
      std::lock_guard<std::mutex> claim_lock(claim_mu_);
      absl::StatusOr<std::optional<storage::Job>> job =
          registry_->ClaimNextJob(options_.worker_id, options_.lease);
      if (!job.ok()) {
        LogError("claiming a job failed", {{"error", job.status().ToString()}});
      } else if (job->has_value()) {
        claimed = true;
        storage::Job j = **job;
        LogInfo("job claimed", {{"job_id", j.job_id}, {"tenant_id", j.tenant_id}, {"attempt", j.attempts}});
        auto done = std::make_shared<std::atomic<bool>>(false);
        auto cancelled = std::make_shared<std::atomic<bool>>(false);
        std::lock_guard<std::mutex> lock(mu_);
        Worker& w = workers_[j.job_id];
        w.done = done;
        w.cancelled = cancelled;
        w.thread = std::thread([this, j, done, cancelled] {
          RunJob(j, cancelled);
          done->store(true);
          Wake();
        });
      }
    }
    if (claimed) continue;  // maybe more capacity and more work
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, absl::ToChronoMilliseconds(options_.poll_interval), [this] { return wake_; });
    wake_ = false;
  }
}

void JobScheduler::Finish(Context& ctx, const storage::JobResult& result) {
  absl::StatusOr<storage::Job> j = registry_->FinishJob(ctx.job().job_id, options_.worker_id, result);
  if (!j.ok()) {
    LogWarn("could not finish job (cancelled or lease lost?)",
            {{"job_id", ctx.job().job_id}, {"error", j.status().ToString()}});
    return;
  }
  metrics_->Add("tessera_jobs_finished_total", {{"state", std::string(storage::JobStateName(j->state))}});
  LogInfo("job finished", {{"job_id", j->job_id}, {"tenant_id", j->tenant_id},
                           {"state", std::string(storage::JobStateName(j->state))}, {"error", j->error}});
}

void JobScheduler::RunJob(storage::Job job, std::shared_ptr<std::atomic<bool>> cancelled) {
  struct ReleaseOnExit {
    JobRunner* runner;
    std::string job_id;
    ~ReleaseOnExit() { runner->Release(job_id); }
  } release{runner_, job.job_id};
  absl::StatusOr<JobSpec> spec = JobSpec::FromJson(job.spec);
  Context ctx(this, job, spec.ok() ? *spec : JobSpec(), std::move(cancelled));
  ctx.SetFirstStep(job.progress.step);
  if (!spec.ok()) {
    storage::JobResult r;
    r.state = storage::JobState::kFailed;
    r.error = absl::StrCat("the stored job specification is unreadable: ", spec.status().message());
    Finish(ctx, r);
    return;
  }

  // A version this job already published: only a build older than Registry::PublishJobVersion could
  // leave one behind a still-running job (it published and finished in separate transactions and
  // crashed between them). Finish with it instead of training a second.
  if (absl::StatusOr<std::vector<storage::ExpertVersion>> versions = registry_->ListVersions(job.tenant_id);
      versions.ok()) {
    std::optional<int64_t> earlier;
    for (const storage::ExpertVersion& v : *versions) {  // newest first: the last match is the first
      if (v.job_id == job.job_id) earlier = v.version;
    }
    if (earlier.has_value()) {
      (void)registry_->AppendJobEvent(
          job.job_id, "version",
          VersionEventJson(*earlier, false, "published by an earlier attempt of this job; not trained again"));
      storage::JobResult r;
      r.state = storage::JobState::kSucceeded;
      r.result_version = *earlier;
      Finish(ctx, r);
      return;
    }
  }

  // Quotas (storage/quotas.h): a job whose version could not be published fails now, not after training.
  if (absl::Status q = registry_->CheckPublishQuota(job.tenant_id, job.job_id); absl::IsResourceExhausted(q)) {
    storage::JobResult r;
    r.state = storage::JobState::kFailed;
    r.error = std::string(q.message());
    Finish(ctx, r);
    return;
  }

  // Lease heartbeat, independent of how long a training step takes.
  std::mutex hb_mu;
  std::condition_variable hb_cv;
  bool hb_stop = false;
  std::thread heartbeat([&] {
    std::unique_lock<std::mutex> lock(hb_mu);
    while (!hb_cv.wait_for(lock, absl::ToChronoMilliseconds(options_.heartbeat_interval),
                           [&] { return hb_stop; })) {
      absl::Status s = registry_->Heartbeat(job.job_id, options_.worker_id, options_.lease);
      if (s.code() == absl::StatusCode::kFailedPrecondition || s.code() == absl::StatusCode::kNotFound) {
        ctx.MarkLost();
      }
    }
  });
  auto stop_heartbeat = [&] {
    {
      std::lock_guard<std::mutex> lock(hb_mu);
      hb_stop = true;
    }
    hb_cv.notify_all();
    heartbeat.join();
  };

  absl::StatusOr<JobOutput> out = runner_->Run(ctx);
  util::CrashPoint("publish.trained");
  if (ctx.lost()) {
    stop_heartbeat();
    LogInfo("job stopped: cancelled or lease lost", {{"job_id", job.job_id}});
    return;
  }
  if (stopping_.load() && !out.ok()) {
    // Server shutdown interrupted it: expire the lease now so the next start requeues it at once.
    stop_heartbeat();
    // (A lease must be positive: one microsecond is already expired when the next server opens.)
    absl::Status s = registry_->Heartbeat(job.job_id, options_.worker_id, absl::Microseconds(1));
    LogInfo("job interrupted by shutdown; lease released for resumption",
            {{"job_id", job.job_id}, {"release", s.ToString()}});
    return;
  }
  if (!out.ok()) {
    stop_heartbeat();
    storage::JobResult r;
    r.state = storage::JobState::kFailed;
    r.error = std::string(out.status().message());
    if (r.error.empty()) r.error = out.status().ToString();
    Finish(ctx, r);
    return;
  }

  // The promotion gate, decided before publishing (the version row records it and is immutable):
  // promote only when the validation loss beats the live version's on the same data AND the
  // general-ability loss rose by at most the bound relative to the backbone's (without general-ability
  // numbers, on validation alone, and the reason says so).
  bool promote = false;
  std::string decision = "not_requested";
  std::string reason = "auto_promote not requested";
  if (ctx.spec().auto_promote) {
    decision = "keep";
    absl::StatusOr<int64_t> live = registry_->GetLive(job.tenant_id);
    absl::StatusOr<double> live_loss = absl::UnknownError("unset");
    if (live.ok()) {
      live_loss = *live == ctx.spec().base_version ? absl::StatusOr<double>(out->base_val_loss)
                                                   : runner_->EvaluateVersion(ctx, *live);
    }
    if (!live.ok() || !live_loss.ok()) {
      reason = absl::StrCat("not promoted: could not evaluate the live version: ",
                            (!live.ok() ? live.status() : live_loss.status()).message());
    } else {
      const bool val_ok = out->val_loss < *live_loss;
      std::string why = absl::StrCat("validation loss ", out->val_loss, val_ok ? " beats" : " does not beat",
                                     " live version ", *live, "'s ", *live_loss);
      bool general_ok = true;
      if (out->general_loss.has_value() && out->base_general_loss.has_value() && *out->base_general_loss > 0) {
        const double bound = ctx.spec().max_general_regression.value_or(options_.max_general_regression);
        const double rel = (*out->general_loss - *out->base_general_loss) / *out->base_general_loss;
        absl::StrAppend(&why, "; general-ability loss ", *out->general_loss, " vs the backbone's ",
                        *out->base_general_loss, " (", rel >= 0 ? "+" : "", std::round(rel * 10000) / 100, "%) ");
        if (bound < 0) {
          absl::StrAppend(&why, "not bounded (no max_general_regression on the job or the server)");
        } else {
          general_ok = rel <= bound;
          absl::StrAppend(&why, general_ok ? "within" : "exceeds", " max_general_regression ", bound,
                          ctx.spec().max_general_regression.has_value() ? "" : " (the server's default)");
        }
      } else {
        absl::StrAppend(&why, "; no general-ability data on this server (tessera-server "
                              "--general-eval-data FILE): decided on validation alone");
      }
      promote = val_ok && general_ok;
      decision = promote ? "promote" : "keep";
      reason = promote ? why : absl::StrCat("not promoted: ", why);
    }
  }

  // Publish: the blob first (fsync'ed), then ONE registry transaction writes the version row, the
  // live-pointer move (when the gate said promote), the "version" event and the job's SUCCEEDED state
  // (Registry::PublishJobVersion): a crash anywhere leaves one version or none, never a version whose job
  // is retried into a second one. Only then is the runtime told (Resync reads the registry's pointer, so
  // it serves the newest move even if an operator's Promote raced this one).
  util::CrashPoint("publish.gate_decided");
  if (promote && !live_->backbone_sha256().empty() && !out->backbone_sha256.empty() &&
      out->backbone_sha256 != live_->backbone_sha256()) {
    promote = false;
    reason = absl::StrCat("not promoted: trained on backbone ", out->backbone_sha256, ", but this server serves ",
                          live_->backbone_sha256(), " (the gate had decided: ", reason, ")");
  }
  absl::StatusOr<std::string> digest = registry_->blobs().Put(out->weights);
  absl::StatusOr<storage::PublishedJob> published =
      digest.ok() ? absl::StatusOr<storage::PublishedJob>(absl::UnknownError("unset")) : digest.status();
  if (digest.ok()) {
    util::CrashPoint("publish.blob_stored");
    storage::NewVersion nv;
    nv.tenant_id = job.tenant_id;
    nv.parent_version = ctx.spec().base_version;
    nv.job_id = job.job_id;
    nv.slots_json = SlotsToJson(out->slots);
    nv.val_loss = out->val_loss;
    nv.base_val_loss = out->base_val_loss;
    nv.blob_digest = *digest;
    nv.backbone_sha256 = out->backbone_sha256;
    nv.method = out->method;
    nv.lora_rank = out->lora_rank;
    nv.general_loss = out->general_loss;
    nv.base_general_loss = out->base_general_loss;
    nv.promotion_decision = decision;
    nv.promotion_reason = reason;
    published = registry_->PublishJobVersion(options_.worker_id, nv, promote, reason, "system");
  }
  stop_heartbeat();
  if (!published.ok()) {
    absl::StatusOr<storage::Job> now = registry_->GetJob("", job.job_id);
    if (now.ok() && (now->state != storage::JobState::kRunning || now->lease_owner != options_.worker_id)) {
      // Cancelled (or requeued to another worker) while publishing: nothing was written, and the job's
      // state is someone else's now.
      LogInfo("job not published: cancelled or lease lost", {{"job_id", job.job_id},
                                                            {"error", published.status().ToString()}});
      return;
    }
    storage::JobResult r;
    r.state = storage::JobState::kFailed;
    r.error = absl::StrCat("publishing the trained version failed: ", published.status().message());
    Finish(ctx, r);
    return;
  }
  util::CrashPoint("publish.committed");
  metrics_->Add("tessera_jobs_finished_total", {{"state", "SUCCEEDED"}});
  LogInfo("job finished", {{"job_id", job.job_id}, {"tenant_id", job.tenant_id}, {"state", "SUCCEEDED"},
                           {"version", published->version.version}, {"promoted", promote},
                           {"reused_version", published->reused}});
  if (promote) {
    if (absl::Status s = live_->Resync(job.tenant_id); !s.ok()) {
      // The pointer moved (committed above); the LiveFollower retries the load. Say so on the job.
      (void)registry_->AppendJobEvent(
          job.job_id, "log",
          LogEventJson(absl::StrCat("version ", published->version.version,
                                    " is live in the registry, but the runtime could not load it yet (",
                                    s.message(), "); it is retried in the background")));
    }
  }
  util::CrashPoint("publish.served");
}

}  // namespace tessera::services
