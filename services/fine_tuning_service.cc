#include "services/fine_tuning_service.h"

#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "services/audit.h"
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

// The request as stored with the job for idempotent replays: canonical JSON (proto field names, fields
// at their default left out, so an unset field and its default are the same request) without the
// idempotency key and tenant, which are what looked the job up.
std::string CanonicalRequest(const v1::CreateJobRequest& req) {
  v1::CreateJobRequest r = req;
  r.clear_idempotency_key();
  r.clear_tenant_id();
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(r, &out, o);
  return out;
}

// The first field (dotted path, in name order) whose value differs between two canonical requests.
std::string FirstDifference(const nlohmann::json& a, const nlohmann::json& b, const std::string& path,
                            std::string* was, std::string* now) {
  if (a.is_object() && b.is_object()) {
    std::set<std::string> keys;
    for (auto it = a.begin(); it != a.end(); ++it) keys.insert(it.key());
    for (auto it = b.begin(); it != b.end(); ++it) keys.insert(it.key());
    for (const std::string& k : keys) {
      const nlohmann::json none;
      const nlohmann::json& x = a.contains(k) ? a.at(k) : none;
      const nlohmann::json& y = b.contains(k) ? b.at(k) : none;
      std::string d = FirstDifference(x, y, path.empty() ? k : path + "." + k, was, now);
      if (!d.empty()) return d;
    }
    return "";
  }
  if (a == b) return "";
  auto show = [](const nlohmann::json& v) {
    std::string s = v.is_null() ? "unset" : v.dump();
    return s.size() > 80 ? s.substr(0, 77) + "..." : s;
  };
  *was = show(a);
  *now = show(b);
  return path.empty() ? "request" : path;
}

// OK when `existing` (found by the request's idempotency key) was created by the same request;
// FAILED_PRECONDITION naming the first differing field otherwise. Jobs from before requests were
// stored (migration 7) are not checked.
absl::Status CheckReplay(const storage::Job& existing, const std::string& request, const std::string& key) {
  if (existing.request.empty() || existing.request == request) return absl::OkStatus();
  nlohmann::json a = nlohmann::json::parse(existing.request, nullptr, false);
  nlohmann::json b = nlohmann::json::parse(request, nullptr, false);
  std::string was, now;
  std::string field = (a.is_discarded() || b.is_discarded()) ? "request" : FirstDifference(a, b, "", &was, &now);
  if (field.empty()) return absl::OkStatus();  // the same JSON written differently
  return absl::FailedPreconditionError(absl::StrCat(
      "idempotency_key \"", key, "\" was already used for job ", existing.job_id, " with a different ", field,
      was.empty() ? "" : absl::StrCat(" (was ", was, ", now ", now, ")"),
      ": retry with the same parameters, or use a new idempotency_key for a different job"));
}

}  // namespace

absl::Status CreateJobFor(const ServiceEnv& env, const storage::Principal& principal,
                           const v1::CreateJobRequest& req, v1::Job* resp) {
  const std::string& tenant = req.tenant_id();
  if (absl::Status s = ValidateJobSuffix(req.suffix()); !s.ok()) return s;
  absl::StatusOr<int64_t> live = env.registry->GetLive(tenant);  // NOT_FOUND for an unknown tenant
  if (!live.ok()) return live.status();
  const std::string canonical = CanonicalRequest(req);
  if (!req.idempotency_key().empty()) {
    // A replay answers with the job it created, before anything is resolved again (datasets may be
    // gone, the automatic values may have moved), unless its parameters differ.
    absl::StatusOr<std::optional<storage::Job>> prior =
        env.registry->FindJobByIdempotencyKey(tenant, req.idempotency_key());
    if (!prior.ok()) return prior.status();
    if (prior->has_value()) {
      if (absl::Status s = CheckReplay(**prior, canonical, req.idempotency_key()); !s.ok()) return s;
      ToProto(**prior, resp);
      return absl::OkStatus();
    }
  }
  JobRequest request = FromProto(req);
  // The auto rule sizes the job from the training data (field errors are reported before a missing
  // dataset, as before auto existed).
  absl::StatusOr<storage::Dataset> training = env.registry->GetDataset(tenant, req.training_dataset_id());
  if (training.ok()) {
    request.training_examples = training->num_examples;
    request.training_tokens = training->num_tokens;
    request.training_loss_tokens = training->num_loss_tokens;
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
  nj.request = canonical;
  nj.suffix = req.suffix();
  absl::StatusOr<storage::Job> job = env.registry->CreateJob(nj, Actor(principal));
  if (!job.ok()) return job.status();
  // A concurrent first use of the same key won the race inside the registry: the same check.
  if (!req.idempotency_key().empty()) {
    if (absl::Status s = CheckReplay(*job, canonical, req.idempotency_key()); !s.ok()) return s;
  }
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
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "FineTuning/CreateJob", absl::Now(), bad);
  }
  absl::Time start = absl::Now();
  Mutation m{"job.create", req->tenant_id(), "tenant/" + req->tenant_id()};
  absl::StatusOr<storage::Principal> p = AuthorizeTenantMutation(env_, *ctx, storage::kScopeFineTune, m);
  absl::Status s = p.ok() ? CreateJobFor(env_, *p, *req, resp) : p.status();
  if (p.ok()) AuditRefused(env_, *p, m, s);
  return FinishUnary(env_, ctx, "FineTuning/CreateJob", start, s);
}

grpc::ServerUnaryReactor* FineTuningService::GetJob(grpc::CallbackServerContext* ctx,
                                                    const v1::GetJobRequest* req, v1::Job* resp) {
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "FineTuning/GetJob", absl::Now(), bad);
  }
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
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "FineTuning/ListJobs", absl::Now(), bad);
  }
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
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "FineTuning/CancelJob", absl::Now(), bad);
  }
  absl::Time start = absl::Now();
  auto run = [&]() -> absl::Status {
    Mutation m{"job.cancel", req->tenant_id(), "job/" + req->job_id()};
    absl::StatusOr<storage::Principal> p = AuthorizeTenantMutation(env_, *ctx, storage::kScopeFineTune, m);
    if (!p.ok()) return p.status();
    absl::Status s = CancelJobFor(env_, req->tenant_id(), req->job_id(), Actor(*p), resp);
    AuditRefused(env_, *p, m, s);
    return s;
  };
  return FinishUnary(env_, ctx, "FineTuning/CancelJob", start, run());
}

grpc::ServerWriteReactor<v1::JobEvent>* FineTuningService::WatchJob(grpc::CallbackServerContext* ctx,
                                                                    const v1::WatchJobRequest* req) {
  const ServiceEnv& env = env_;
  constexpr char kMethod[] = "FineTuning/WatchJob";
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) return new RejectedWriter<v1::JobEvent>(env, kMethod, bad);
  // Authorized and counted against the stream limits before a thread is made for it.
  absl::StatusOr<storage::Principal> p = env.auth->AuthorizeTenant(*ctx, req->tenant_id(), storage::kScopeRead);
  if (!p.ok()) return new RejectedWriter<v1::JobEvent>(env, kMethod, p.status());
  absl::StatusOr<std::shared_ptr<StreamSlot>> acquired = AcquireStreamSlot(env, req->tenant_id(), "WatchJob");
  if (!acquired.ok()) return new RejectedWriter<v1::JobEvent>(env, kMethod, acquired.status());
  std::shared_ptr<StreamSlot> slot = *std::move(acquired);
  // The request and context outlive the reactor's body (gRPC keeps them until OnDone).
  return new ThreadedWriter<v1::JobEvent>(
      env_, kMethod, [&env, req, slot](ThreadedWriter<v1::JobEvent>* w) -> absl::Status {
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
