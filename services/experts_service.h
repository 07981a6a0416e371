// tessera.v1.Experts: a tenant's immutable expert versions (newest first) and the live flag, and
// ExportVersion: the version as checkpoint files, written by env.exporter and streamed in chunks.
#pragma once

#include "services/service_env.h"
// First: the callback handlers this service's base class instantiates parse requests through
// proto/request_parse.h (invalid UTF-8 -> INVALID_ARGUMENT naming the field, not UNIMPLEMENTED).
#include "tessera/v1/request_traits.h"
#include "tessera/v1/experts.grpc.pb.h"

namespace tessera::services {

class ExpertsService final : public v1::Experts::CallbackService {
 public:
  explicit ExpertsService(const ServiceEnv& env) : env_(env) {}
  grpc::ServerUnaryReactor* ListVersions(grpc::CallbackServerContext* ctx,
                                         const v1::ListVersionsRequest* req,
                                         v1::ListVersionsResponse* resp) override;
  grpc::ServerUnaryReactor* GetVersion(grpc::CallbackServerContext* ctx, const v1::GetVersionRequest* req,
                                       v1::ExpertVersion* resp) override;
  grpc::ServerWriteReactor<v1::ExportChunk>* ExportVersion(grpc::CallbackServerContext* ctx,
                                                           const v1::ExportVersionRequest* req) override;

 private:
  const ServiceEnv& env_;
};

// Shared with Admin.ListVersions (authorization done by the caller).
absl::Status ListVersionsFor(const ServiceEnv& env, const std::string& tenant_id,
                             v1::ListVersionsResponse* resp);

}  // namespace tessera::services
