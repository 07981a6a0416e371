// The check an inference replica or trainer makes of its control plane at start (--control-plane):
// Admin.GetRuntimeStatus with the given ADMIN key must answer, and as --role control or all, so a
// typo in the address, a wrong key or pointing a replica at another replica fails the start with a
// message naming the flag, instead of a replica that silently serves a registry nobody controls.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "tessera/v1/admin.pb.h"

namespace tessera::services {

// The one channel a replica or trainer keeps to its control plane (the probe below, blob transfer,
// the change-feed watch): plaintext when `ca_file` is empty, else TLS trusting that PEM CA
// (--control-plane-ca). NOT_FOUND naming the flag when the file cannot be read.
absl::StatusOr<std::shared_ptr<grpc::Channel>> ControlPlaneChannel(const std::string& address,
                                                                   const std::string& ca_file);

// Over `channel` to `address`; retries UNAVAILABLE (the control plane still starting) until `wait` has
// passed.
absl::StatusOr<v1::RuntimeStatus> ProbeControlPlane(const std::shared_ptr<grpc::Channel>& channel,
                                                    const std::string& address, const std::string& admin_key,
                                                    absl::Duration wait);

}  // namespace tessera::services
