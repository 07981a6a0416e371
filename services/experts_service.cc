#include "services/experts_service.h"

#include "absl/strings/str_cat.h"
#include "services/convert.h"

namespace tessera::services {

absl::Status ListVersionsFor(const ServiceEnv& env, const std::string& tenant_id,
                             v1::ListVersionsResponse* resp) {
  absl::StatusOr<int64_t> live = env.registry->GetLive(tenant_id);  // NOT_FOUND for an unknown tenant
  if (!live.ok()) return live.status();
  absl::StatusOr<std::vector<storage::ExpertVersion>> vs = env.registry->ListVersions(tenant_id);
  if (!vs.ok()) return vs.status();
  for (const storage::ExpertVersion& v : *vs) ToProto(v, resp->add_versions());
  resp->set_live_version(*live);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* ExpertsService::ListVersions(grpc::CallbackServerContext* ctx,
                                                       const v1::ListVersionsRequest* req,
                                                       v1::ListVersionsResponse* resp) {
  absl::Time start = absl::Now();
  auto run = [&]() -> absl::Status {
    absl::StatusOr<storage::Principal> p = env_.auth->AuthorizeTenant(*ctx, req->tenant_id());
    if (!p.ok()) return p.status();
    return ListVersionsFor(env_, req->tenant_id(), resp);
  };
  return FinishUnary(env_, ctx, "Experts/ListVersions", start, run());
}

grpc::ServerUnaryReactor* ExpertsService::GetVersion(grpc::CallbackServerContext* ctx,
                                                     const v1::GetVersionRequest* req,
                                                     v1::ExpertVersion* resp) {
  absl::Time start = absl::Now();
  auto run = [&]() -> absl::Status {
    absl::StatusOr<storage::Principal> p = env_.auth->AuthorizeTenant(*ctx, req->tenant_id());
    if (!p.ok()) return p.status();
    if (req->version() < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "version: must be >= 1 (0 is the frozen base experts, which have no stored version), got ",
          req->version()));
    }
    absl::StatusOr<storage::ExpertVersion> v = env_.registry->GetVersion(req->tenant_id(), req->version());
    if (!v.ok()) return v.status();
    ToProto(*v, resp);
    return absl::OkStatus();
  };
  return FinishUnary(env_, ctx, "Experts/GetVersion", start, run());
}

}  // namespace tessera::services
