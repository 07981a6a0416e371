#include "services/experts_service.h"

#include "absl/strings/str_cat.h"
#include "services/convert.h"
#include "services/version_backbone.h"

namespace tessera::services {
namespace {

// Below gRPC's default 4 MiB message limit with room for the chunk's other fields.
constexpr int64_t kExportChunkBytes = 1 << 20;

// ToProto, with the backbone digest of a row older than the registry column read from its blob.
void VersionToProto(const ServiceEnv& env, const storage::ExpertVersion& v, v1::ExpertVersion* out) {
  ToProto(v, out);
  if (v.backbone_sha256.empty()) {
    absl::StatusOr<std::string> sha = VersionBackboneSha256(*env.registry, v);
    if (sha.ok()) out->set_backbone_sha256(*sha);
  }
}

}  // namespace

absl::Status ListVersionsFor(const ServiceEnv& env, const std::string& tenant_id,
                             v1::ListVersionsResponse* resp) {
  absl::StatusOr<int64_t> live = env.registry->GetLive(tenant_id);  // NOT_FOUND for an unknown tenant
  if (!live.ok()) return live.status();
  absl::StatusOr<std::vector<storage::ExpertVersion>> vs = env.registry->ListVersions(tenant_id);
  if (!vs.ok()) return vs.status();
  for (const storage::ExpertVersion& v : *vs) VersionToProto(env, v, resp->add_versions());
  resp->set_live_version(*live);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* ExpertsService::ListVersions(grpc::CallbackServerContext* ctx,
                                                       const v1::ListVersionsRequest* req,
                                                       v1::ListVersionsResponse* resp) {
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "Experts/ListVersions", absl::Now(), bad);
  }
  absl::Time start = absl::Now();
  auto run = [&]() -> absl::Status {
    absl::StatusOr<storage::Principal> p = env_.auth->AuthorizeTenant(*ctx, req->tenant_id(), storage::kScopeRead);
    if (!p.ok()) return p.status();
    return ListVersionsFor(env_, req->tenant_id(), resp);
  };
  return FinishUnary(env_, ctx, "Experts/ListVersions", start, run());
}

grpc::ServerUnaryReactor* ExpertsService::GetVersion(grpc::CallbackServerContext* ctx,
                                                     const v1::GetVersionRequest* req,
                                                     v1::ExpertVersion* resp) {
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "Experts/GetVersion", absl::Now(), bad);
  }
  absl::Time start = absl::Now();
  auto run = [&]() -> absl::Status {
    absl::StatusOr<storage::Principal> p = env_.auth->AuthorizeTenant(*ctx, req->tenant_id(), storage::kScopeRead);
    if (!p.ok()) return p.status();
    if (req->version() < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "version: must be >= 1 (0 is the frozen base experts, which have no stored version), got ",
          req->version()));
    }
    absl::StatusOr<storage::ExpertVersion> v = env_.registry->GetVersion(req->tenant_id(), req->version());
    if (!v.ok()) return v.status();
    VersionToProto(env_, *v, resp);
    return absl::OkStatus();
  };
  return FinishUnary(env_, ctx, "Experts/GetVersion", start, run());
}

grpc::ServerWriteReactor<v1::ExportChunk>* ExpertsService::ExportVersion(grpc::CallbackServerContext* ctx,
                                                                         const v1::ExportVersionRequest* req) {
  const ServiceEnv& env = env_;
  constexpr char kMethod[] = "Experts/ExportVersion";
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) return new RejectedWriter<v1::ExportChunk>(env, kMethod, bad);
  // Authorized and counted against the stream limits before a thread is made for it.
  absl::StatusOr<storage::Principal> p = env.auth->AuthorizeTenant(*ctx, req->tenant_id(), storage::kScopeRead);
  if (!p.ok()) return new RejectedWriter<v1::ExportChunk>(env, kMethod, p.status());
  absl::StatusOr<std::shared_ptr<StreamSlot>> acquired = AcquireStreamSlot(env, req->tenant_id(), "ExportVersion");
  if (!acquired.ok()) return new RejectedWriter<v1::ExportChunk>(env, kMethod, acquired.status());
  std::shared_ptr<StreamSlot> slot = *std::move(acquired);
  // The request and context outlive the reactor's body (gRPC keeps them until OnDone).
  return new ThreadedWriter<v1::ExportChunk>(
      env_, kMethod, [&env, req, slot](ThreadedWriter<v1::ExportChunk>* w) -> absl::Status {
        if (env.exporter == nullptr) return absl::UnavailableError("this server cannot export versions");
        ExportRequest r;
        r.tenant_id = req->tenant_id();
        r.version = req->version();
        r.overlay_only = req->overlay_only();
        r.max_shard_bytes = req->max_shard_bytes();
        absl::StatusOr<std::unique_ptr<ExportDir>> dir = env.exporter->Export(r);
        if (!dir.ok()) return dir.status();
        return StreamExportedFiles(**dir, kExportChunkBytes, [w](const v1::ExportChunk& c) { return w->Write(c); });
      });
}

}  // namespace tessera::services
