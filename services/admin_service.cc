#include "services/admin_service.h"

#include "absl/strings/str_cat.h"
#include "core/backend/cpu/cpu_kernel_set.h"
#include "services/convert.h"
#include "services/experts_service.h"
#include "services/fine_tuning_service.h"
#include "services/job_scheduler.h"
#include "services/log.h"

namespace tessera::services {
namespace {

constexpr size_t kMaxDisplayName = 256;

void MoveToProto(const storage::LiveMove& m, v1::LiveVersionResponse* out) {
  out->set_tenant_id(m.tenant_id);
  out->set_live_version(m.live_version);
  out->set_previous_version(m.previous_live);
  out->set_changed(m.changed);
}

absl::Status CheckTenantId(const std::string& tenant_id) {
  if (tenant_id.empty()) return absl::InvalidArgumentError("tenant_id is required");
  if (absl::Status s = storage::ValidateTenantId(tenant_id); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("tenant_id: ", s.message()));
  }
  return absl::OkStatus();
}

}  // namespace

// Authorizes an ADMIN key, runs `body(principal)` inline and finishes the call.
template <typename Body>
grpc::ServerUnaryReactor* AdminUnary(const ServiceEnv& env, grpc::CallbackServerContext* ctx,
                                     std::string_view method, Body body) {
  absl::Time start = absl::Now();
  absl::StatusOr<storage::Principal> principal = env.auth->AuthorizeAdmin(*ctx);
  absl::Status status = principal.ok() ? body(*principal) : principal.status();
  return FinishUnary(env, ctx, method, start, status);
}

grpc::ServerUnaryReactor* AdminService::CreateTenant(grpc::CallbackServerContext* ctx,
                                                     const v1::CreateTenantRequest* req,
                                                     v1::CreateTenantResponse* resp) {
  return AdminUnary(env_, ctx, "Admin/CreateTenant", [&]([[maybe_unused]] const storage::Principal& principal) -> absl::Status {
    if (absl::Status s = CheckTenantId(req->tenant_id()); !s.ok()) return s;
    if (req->display_name().size() > kMaxDisplayName) {
      return absl::InvalidArgumentError(absl::StrCat("display_name: at most ", kMaxDisplayName, " bytes"));
    }
    absl::StatusOr<storage::Tenant> t =
        env_.registry->CreateTenant(req->tenant_id(), req->display_name(), Actor(principal));
    if (!t.ok()) return t.status();
    absl::StatusOr<storage::IssuedApiKey> key =
        env_.registry->CreateApiKey(storage::Role::kTenant, t->tenant_id, Actor(principal));
    if (!key.ok()) return key.status();
    ToProto(*t, 0, resp->mutable_tenant());
    ToProto(key->key, resp->mutable_api_key());
    resp->mutable_api_key()->set_secret(key->secret);
    LogInfo("tenant created", {{"tenant_id", t->tenant_id}, {"actor", Actor(principal)}});
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::ListTenants(grpc::CallbackServerContext* ctx,
                                                    const v1::ListTenantsRequest*,
                                                    v1::ListTenantsResponse* resp) {
  return AdminUnary(env_, ctx, "Admin/ListTenants", [&]([[maybe_unused]] const storage::Principal& principal) -> absl::Status {
    absl::StatusOr<std::vector<storage::Tenant>> ts = env_.registry->ListTenants();
    if (!ts.ok()) return ts.status();
    for (const storage::Tenant& t : *ts) {
      absl::StatusOr<int64_t> live = env_.registry->GetLive(t.tenant_id);
      ToProto(t, live.ok() ? *live : 0, resp->add_tenants());
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::IssueApiKey(grpc::CallbackServerContext* ctx,
                                                    const v1::IssueApiKeyRequest* req,
                                                    v1::IssueApiKeyResponse* resp) {
  return AdminUnary(env_, ctx, "Admin/IssueApiKey", [&]([[maybe_unused]] const storage::Principal& principal) -> absl::Status {
    if (absl::Status s = CheckTenantId(req->tenant_id()); !s.ok()) return s;
    absl::StatusOr<storage::IssuedApiKey> key =
        env_.registry->CreateApiKey(storage::Role::kTenant, req->tenant_id(), Actor(principal));
    if (!key.ok()) return key.status();
    ToProto(key->key, resp->mutable_api_key());
    resp->mutable_api_key()->set_secret(key->secret);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::RevokeApiKey(grpc::CallbackServerContext* ctx,
                                                     const v1::RevokeApiKeyRequest* req,
                                                     v1::RevokeApiKeyResponse* resp) {
  return AdminUnary(env_, ctx, "Admin/RevokeApiKey", [&]([[maybe_unused]] const storage::Principal& principal) -> absl::Status {
    if (req->key_id().empty()) return absl::InvalidArgumentError("key_id is required");
    if (req->key_id() == principal.key_id) {
      return absl::FailedPreconditionError("key_id: an API key cannot revoke itself");
    }
    if (absl::Status s = env_.registry->RevokeApiKey(req->key_id(), Actor(principal)); !s.ok()) return s;
    env_.auth->Forget(req->key_id());
    absl::StatusOr<storage::ApiKey> key = env_.registry->GetApiKey(req->key_id());
    if (!key.ok()) return key.status();
    ToProto(*key, resp->mutable_api_key());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::ListVersions(grpc::CallbackServerContext* ctx,
                                                     const v1::ListVersionsRequest* req,
                                                     v1::ListVersionsResponse* resp) {
  return AdminUnary(env_, ctx, "Admin/ListVersions", [&]([[maybe_unused]] const storage::Principal& principal) -> absl::Status {
    if (absl::Status s = CheckTenantId(req->tenant_id()); !s.ok()) return s;
    return ListVersionsFor(env_, req->tenant_id(), resp);
  });
}

grpc::ServerUnaryReactor* AdminService::Promote(grpc::CallbackServerContext* ctx,
                                                const v1::PromoteRequest* req, v1::LiveVersionResponse* resp) {
  const ServiceEnv& env = env_;
  // Waits for the runtime to load the version: off the callback threads.
  return RunOnPool(env_, ctx, "Admin/Promote", [&env, ctx, req, resp]() -> absl::Status {
    absl::StatusOr<storage::Principal> p = env.auth->AuthorizeAdmin(*ctx);
    if (!p.ok()) return p.status();
    if (absl::Status s = CheckTenantId(req->tenant_id()); !s.ok()) return s;
    if (req->version() < 0) {
      return absl::InvalidArgumentError(absl::StrCat("version: must be >= 0 (0 = base), got ", req->version()));
    }
    absl::StatusOr<storage::LiveMove> m = env.live->Promote(req->tenant_id(), req->version(), Actor(*p));
    if (!m.ok()) return m.status();
    MoveToProto(*m, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::Rollback(grpc::CallbackServerContext* ctx,
                                                 const v1::RollbackRequest* req, v1::LiveVersionResponse* resp) {
  const ServiceEnv& env = env_;
  return RunOnPool(env_, ctx, "Admin/Rollback", [&env, ctx, req, resp]() -> absl::Status {
    absl::StatusOr<storage::Principal> p = env.auth->AuthorizeAdmin(*ctx);
    if (!p.ok()) return p.status();
    if (absl::Status s = CheckTenantId(req->tenant_id()); !s.ok()) return s;
    std::optional<int64_t> to;
    if (req->has_to_version()) {
      if (req->to_version() < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("to_version: must be >= 0 (0 = base), got ", req->to_version()));
      }
      to = req->to_version();
    }
    absl::StatusOr<storage::LiveMove> m = env.live->Rollback(req->tenant_id(), to, Actor(*p));
    if (!m.ok()) return m.status();
    MoveToProto(*m, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::GetRuntimeStatus(grpc::CallbackServerContext* ctx,
                                                         const v1::GetRuntimeStatusRequest*,
                                                         v1::RuntimeStatus* resp) {
  return AdminUnary(env_, ctx, "Admin/GetRuntimeStatus", [&]([[maybe_unused]] const storage::Principal& principal) -> absl::Status {
    const BackboneInfo& b = env_.backbone;
    v1::BackboneInfo* bp = resp->mutable_backbone();
    bp->set_name(b.name);
    bp->set_architecture(b.architecture);
    bp->set_total_parameters(b.total_parameters);
    bp->set_expert_parameters(b.expert_parameters);
    bp->set_num_layers(b.num_layers);
    bp->set_num_experts(b.num_experts);
    bp->set_experts_per_token(b.experts_per_token);
    bp->set_sha256(b.sha256);
    bp->set_dtype(b.dtype);
    bp->set_max_position_embeddings(b.max_seq_len);
    bp->set_tokenizer(b.tokenizer);
    resp->set_device(b.device);
    resp->set_context_length(b.context);
    resp->set_kv_cache_bytes(b.kv_cache_bytes);
    resp->set_cpu_features(cpu::CpuFeaturesString());
    resp->set_kernel_set(cpu::CpuKernelSetString());
    resp->set_inference_available(env_.engine != nullptr);
    resp->set_training_available(env_.scheduler != nullptr);
    if (env_.engine != nullptr) {
      EngineStatus es = env_.engine->Status();
      for (const ResidentVersionInfo& r : es.resident) {
        v1::ResidentVersion* rp = resp->add_resident_versions();
        rp->set_tenant_id(r.tenant_id);
        rp->set_version(r.version);
        rp->set_bytes(r.bytes);
        rp->set_sha256(r.sha256);
      }
      resp->set_resident_bytes(es.resident_bytes);
      resp->set_resident_bytes_limit(es.resident_bytes_limit);
      resp->mutable_queues()->set_inference_pending(es.pending_requests);
    }
    absl::StatusOr<int64_t> queued = env_.registry->CountJobs("", storage::JobState::kQueued);
    if (!queued.ok()) return queued.status();
    resp->mutable_queues()->set_jobs_queued(*queued);
    absl::StatusOr<int64_t> running = env_.registry->CountJobs("", storage::JobState::kRunning);
    if (!running.ok()) return running.status();
    resp->set_jobs_running(*running);
    if (env_.scheduler != nullptr) {
      for (const std::string& id : env_.scheduler->RunningJobIds()) resp->add_running_job_ids(id);
    }
    resp->set_server_version(env_.server_version);
    SetTimestamp(absl::ToUnixMicros(env_.started_at), resp->mutable_started_at());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::ListJobs(grpc::CallbackServerContext* ctx,
                                                 const v1::ListJobsRequest* req, v1::ListJobsResponse* resp) {
  return AdminUnary(env_, ctx, "Admin/ListJobs", [&]([[maybe_unused]] const storage::Principal& principal) -> absl::Status {
    if (!req->tenant_id().empty()) {
      if (absl::Status s = CheckTenantId(req->tenant_id()); !s.ok()) return s;
    }
    return ListJobsFor(env_, req->tenant_id(), req->page_size(), req->page_token(), resp);
  });
}

grpc::ServerUnaryReactor* AdminService::CancelJob(grpc::CallbackServerContext* ctx,
                                                  const v1::CancelJobRequest* req, v1::Job* resp) {
  return AdminUnary(env_, ctx, "Admin/CancelJob", [&]([[maybe_unused]] const storage::Principal& principal) -> absl::Status {
    // Admin scope: any tenant's job; a tenant_id, if given, must match the job's.
    return CancelJobFor(env_, req->tenant_id(), req->job_id(), Actor(principal), resp);
  });
}

}  // namespace tessera::services
