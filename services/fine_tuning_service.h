// tessera.v1.FineTuning: create (validated, idempotent), get, list, cancel and watch jobs. Jobs live in
// the registry's durable queue; the JobScheduler runs them.
#pragma once

#include "services/service_env.h"
// First: the callback handlers this service's base class instantiates parse requests through
// proto/request_parse.h (invalid UTF-8 -> INVALID_ARGUMENT naming the field, not UNIMPLEMENTED).
#include "tessera/v1/request_traits.h"
#include "tessera/v1/fine_tuning.grpc.pb.h"

namespace tessera::services {

class FineTuningService final : public v1::FineTuning::CallbackService {
 public:
  explicit FineTuningService(const ServiceEnv& env) : env_(env) {}
  grpc::ServerUnaryReactor* CreateJob(grpc::CallbackServerContext* ctx, const v1::CreateJobRequest* req,
                                      v1::Job* resp) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* ctx, const v1::GetJobRequest* req,
                                   v1::Job* resp) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx, const v1::ListJobsRequest* req,
                                     v1::ListJobsResponse* resp) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* ctx, const v1::CancelJobRequest* req,
                                      v1::Job* resp) override;
  grpc::ServerWriteReactor<v1::JobEvent>* WatchJob(grpc::CallbackServerContext* ctx,
                                                   const v1::WatchJobRequest* req) override;

 private:
  const ServiceEnv& env_;
};

// Validates and queues a job for `req.tenant_id()` (the caller authorized `principal` for it); shared with
// the HTTP API's POST /v1/fine_tuning/jobs.
absl::Status CreateJobFor(const ServiceEnv& env, const storage::Principal& principal,
                          const v1::CreateJobRequest& req, v1::Job* resp);
// Shared with Admin.ListJobs / Admin.CancelJob: tenant_id "" = any tenant (callers authorize first).
absl::Status ListJobsFor(const ServiceEnv& env, const std::string& tenant_id, int page_size,
                         const std::string& page_token, v1::ListJobsResponse* resp);
absl::Status CancelJobFor(const ServiceEnv& env, const std::string& tenant_id, const std::string& job_id,
                          const std::string& actor, v1::Job* resp);

}  // namespace tessera::services
