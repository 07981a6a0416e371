#include "services/fine_tuning_service.h"

#include "absl/strings/str_cat.h"
#include "services/convert.h"
#include "services/job_scheduler.h"
#include "services/log.h"
#include "services/version_backbone.h"

namespace tessera::services {
namespace {

// Prefixes a lookup failure with the request field that named the object.
absl::Status FieldStatus(const char* field, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat(field, ": ", s.message()));
}

}  // namespace

absl::Status CreateJobFor(const ServiceEnv& env, const storage::Principal& principal,
                           const v1::CreateJobRequest& req, v1::Job* resp) {
  const std::string& tenant = req.tenant_id();
  absl::StatusOr<int64_t> live = env.registry->GetLive(tenant);  // NOT_FOUND for an unknown tenant
  if (!live.ok()) return live.status();
  JobRequest request = FromProto(req);
  // The auto rule sizes the job from the training data (field errors are reported before a missing
  // dataset, as before auto existed).
  absl::StatusOr<storage::Dataset> training = env.registry->GetDataset(tenant, req.training_dataset_id());
  if (training.ok()) {
    request.training_examples = training->num_examples;
    request.training_tokens = training->num_tokens;
  }
  absl::StatusOr<JobSpec> spec = ValidateAndFill(request, env.backbone, *live);
  if (!spec.ok()) return spec.status();
  if (!training.ok()) return FieldStatus("training_dataset_id", training.status());
  if (!req.validation_dataset_id().empty()) {
    if (absl::StatusOr<storage::Dataset> d = env.registry->GetDataset(tenant, req.validation_dataset_id());
        !d.ok()) {
      return FieldStatus("validation_dataset_id", d.status());
    }
  }
  if (spec->base_version > 0) {
    if (absl::StatusOr<storage::ExpertVersion> v = env.registry->GetVersion(tenant, spec->base_version);
        !v.ok()) {
      return FieldStatus("base_version", v.status());
    }
    // Fails fast here; the job's runner checks again against the backbone it actually loads.
    if (absl::Status s = CheckVersionBackbone(*env.registry, tenant, spec->base_version, env.backbone.sha256);
        !s.ok()) {
      return FieldStatus("base_version", s);
    }
  }
  storage::NewJob nj;
  nj.tenant_id = tenant;
  nj.spec = spec->ToJson();
  nj.training_dataset_id = req.training_dataset_id();
  nj.validation_dataset_id = req.validation_dataset_id();
  nj.idempotency_key = req.idempotency_key();
  nj.max_steps = spec->max_steps;
  absl::StatusOr<storage::Job> job = env.registry->CreateJob(nj, Actor(principal));
  if (!job.ok()) return job.status();
  if (env.scheduler != nullptr) env.scheduler->Wake();
  LogInfo("job queued", {{"tenant_id", tenant}, {"job_id", job->job_id}, {"actor", Actor(principal)}});
  ToProto(*job, resp);
  return absl::OkStatus();
}

absl::Status ListJobsFor(const ServiceEnv& env, const std::string& tenant_id, int page_size,
                         const std::string& page_token, v1::ListJobsResponse* resp) {
  if (page_size < 0) {
    return absl::InvalidArgumentError(absl::StrCat("page_size: must be >= 0, got ", page_size));
  }
  if (!tenant_id.empty()) {
    if (absl::StatusOr<storage::Tenant> t = env.registry->GetTenant(tenant_id); !t.ok()) return t.status();
  }
  absl::StatusOr<storage::JobPage> page = env.registry->ListJobs(tenant_id, page_size, page_token);
  if (!page.ok()) return FieldStatus("page_token", page.status());
  for (const storage::Job& j : page->jobs) ToProto(j, resp->add_jobs());
  resp->set_next_page_token(page->next_page_token);
  return absl::OkStatus();
}

absl::Status CancelJobFor(const ServiceEnv& env, const std::string& tenant_id, const std::string& job_id,
                          const std::string& actor, v1::Job* resp) {
  if (job_id.empty()) return absl::InvalidArgumentError("job_id is required");
  absl::StatusOr<storage::Job> job = env.registry->CancelJob(tenant_id, job_id, actor);
  if (!job.ok()) return job.status();
  // A job running in this process stops now rather than at its next heartbeat.
  if (env.scheduler != nullptr) env.scheduler->NotifyCancelled(job_id);
  LogInfo("job cancelled", {{"job_id", job_id}, {"actor", actor}});
  ToProto(*job, resp);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* FineTuningService::CreateJob(grpc::CallbackServerContext* ctx,
                                                       const v1::CreateJobRequest* req, v1::Job* resp) {
  absl::Time start = absl::Now();
  absl::StatusOr<storage::Principal> p = env_.auth->AuthorizeTenant(*ctx, req->tenant_id(), storage::kScopeFineTune);
  absl::Status s = p.ok() ? CreateJobFor(env_, *p, *req, resp) : p.status();
  return FinishUnary(env_, ctx, "FineTuning/CreateJob", start, s);
}

grpc::ServerUnaryReactor* FineTuningService::GetJob(grpc::CallbackServerContext* ctx,
                                                    const v1::GetJobRequest* req, v1::Job* resp) {
  absl::Time start = absl::Now();
  auto run = [&]() -> absl::Status {
    absl::StatusOr<storage::Principal> p = env_.auth->AuthorizeTenant(*ctx, req->tenant_id(), storage::kScopeRead);
    if (!p.ok()) return p.status();
    if (req->job_id().empty()) return absl::InvalidArgumentError("job_id is required");
    absl::StatusOr<storage::Job> job = env_.registry->GetJob(req->tenant_id(), req->job_id());
    if (!job.ok()) return job.status();
    ToProto(*job, resp);
    return absl::OkStatus();
  };
  return FinishUnary(env_, ctx, "FineTuning/GetJob", start, run());
}

grpc::ServerUnaryReactor* FineTuningService::ListJobs(grpc::CallbackServerContext* ctx,
                                                      const v1::ListJobsRequest* req,
                                                      v1::ListJobsResponse* resp) {
  absl::Time start = absl::Now();
  auto run = [&]() -> absl::Status {
    absl::StatusOr<storage::Principal> p = env_.auth->AuthorizeTenant(*ctx, req->tenant_id(), storage::kScopeRead);
    if (!p.ok()) return p.status();
    return ListJobsFor(env_, req->tenant_id(), req->page_size(), req->page_token(), resp);
  };
  return FinishUnary(env_, ctx, "FineTuning/ListJobs", start, run());
}

grpc::ServerUnaryReactor* FineTuningService::CancelJob(grpc::CallbackServerContext* ctx,
                                                       const v1::CancelJobRequest* req, v1::Job* resp) {
  absl::Time start = absl::Now();
  auto run = [&]() -> absl::Status {
    absl::StatusOr<storage::Principal> p = env_.auth->AuthorizeTenant(*ctx, req->tenant_id(), storage::kScopeFineTune);
    if (!p.ok()) return p.status();
    return CancelJobFor(env_, req->tenant_id(), req->job_id(), Actor(*p), resp);
  };
  return FinishUnary(env_, ctx, "FineTuning/CancelJob", start, run());
}

grpc::ServerWriteReactor<v1::JobEvent>* FineTuningService::WatchJob(grpc::CallbackServerContext* ctx,
                                                                    const v1::WatchJobRequest* req) {
  const ServiceEnv& env = env_;
  // The request and context outlive the reactor's body (gRPC keeps them until OnDone).
  return new ThreadedWriter<v1::JobEvent>(
      env_, "FineTuning/WatchJob", [&env, ctx, req](ThreadedWriter<v1::JobEvent>* w) -> absl::Status {
        absl::StatusOr<storage::Principal> p = env.auth->AuthorizeTenant(*ctx, req->tenant_id(), storage::kScopeRead);
        if (!p.ok()) return p.status();
        if (req->job_id().empty()) return absl::InvalidArgumentError("job_id is required");
        if (req->after_seq() < 0) {
          return absl::InvalidArgumentError(absl::StrCat("after_seq: must be >= 0, got ", req->after_seq()));
        }
        int64_t after = req->after_seq();
        for (;;) {
          // Job state first, then events: if the job was finished when read, its final events are
          // already in the log (the terminal "state" event is written with the state change).
          absl::StatusOr<storage::Job> job = env.registry->GetJob(req->tenant_id(), req->job_id());
          if (!job.ok()) return job.status();
          absl::StatusOr<std::vector<storage::JobEvent>> events =
              env.registry->ListJobEvents(req->tenant_id(), req->job_id(), after);
          if (!events.ok()) return events.status();
          for (const storage::JobEvent& e : *events) {
            v1::JobEvent out;
            ToProto(e, &out);
            if (!w->Write(out)) return absl::CancelledError("the client went away");
            after = e.seq;
          }
          if (storage::IsTerminal(job->state)) return absl::OkStatus();
          if (env.shutting_down != nullptr && env.shutting_down->load()) {
            return absl::UnavailableError("the server is shutting down; watch again to resume (after_seq)");
          }
          absl::StatusOr<bool> more = env.registry->WaitForJobEvents(req->job_id(), after, absl::Milliseconds(500));
          if (!more.ok()) return more.status();
          if (w->cancelled()) return absl::CancelledError("the client went away");
        }
      });
}

}  // namespace tessera::services
