#include "services/control_plane_client.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "services/status_util.h"
#include "tessera/v1/admin.grpc.pb.h"

namespace tessera::services {

absl::StatusOr<std::shared_ptr<grpc::Channel>> ControlPlaneChannel(const std::string& address,
                                                                   const std::string& ca_file) {
  if (ca_file.empty()) return grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  std::ifstream in(ca_file);
  if (!in) return absl::NotFoundError(absl::StrCat("--control-plane-ca ", ca_file, ": cannot read"));
  std::stringstream pem;
  pem << in.rdbuf();
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = pem.str();
  return grpc::CreateChannel(address, grpc::SslCredentials(tls));
}

absl::StatusOr<v1::RuntimeStatus> ProbeControlPlane(const std::shared_ptr<grpc::Channel>& channel,
                                                    const std::string& address, const std::string& admin_key,
                                                    absl::Duration wait) {
  std::unique_ptr<v1::Admin::Stub> admin = v1::Admin::NewStub(channel);
  const absl::Time end = absl::Now() + wait;
  for (;;) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + admin_key);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::RuntimeStatus status;
    grpc::Status s = admin->GetRuntimeStatus(&ctx, v1::GetRuntimeStatusRequest(), &status);
    if (s.ok()) {
      if (status.role() != "control" && status.role() != "all") {
        return absl::FailedPreconditionError(
            absl::StrCat("--control-plane ", address, " runs --role ", status.role().empty() ? "(unknown)" : status.role(),
                         ", not the control plane (--role control or all)"));
      }
      return status;
    }
    const bool retry = s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                       s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
    if (!retry || absl::Now() >= end) {
      std::string hint;
      if (s.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
          s.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
        hint = " (--control-plane-key-file must hold an ADMIN key of that control plane)";
      } else if (retry) {
        hint = absl::StrCat(" (not reachable for ", absl::FormatDuration(wait), ")");
      }
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                          absl::StrCat("--control-plane ", address, ": ", s.error_message(), hint));
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
}

}  // namespace tessera::services
