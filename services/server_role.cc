#include "services/server_role.h"

#include "absl/strings/str_cat.h"

namespace tessera::services {

absl::StatusOr<ServerRole> ParseServerRole(std::string_view name) {
  if (name == "all") return ServerRole::kAll;
  if (name == "control") return ServerRole::kControl;
  if (name == "inference") return ServerRole::kInference;
  if (name == "trainer") return ServerRole::kTrainer;
  return absl::InvalidArgumentError(
      absl::StrCat("--role must be all, control, inference or trainer, got '", std::string(name), "'"));
}

std::string ServerRoleName(ServerRole role) {
  switch (role) {
    case ServerRole::kAll: return "all";
    case ServerRole::kControl: return "control";
    case ServerRole::kInference: return "inference";
    case ServerRole::kTrainer: return "trainer";
  }
  return "all";
}

absl::Status CheckRoleOptions(ServerRole role, const std::string& registry, const std::string& control_plane) {
  const std::string name = ServerRoleName(role);
  if (RoleIsControlPlane(role)) {
    if (!control_plane.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--control-plane is for --role inference or trainer (they follow a control plane); this is --role ", name));
    }
    return absl::OkStatus();
  }
  if (control_plane.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--role ", name, " needs --control-plane HOST:PORT (the gRPC address of the --role control process)"));
  }
  if (control_plane.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--control-plane must be HOST:PORT, got '", control_plane, "'"));
  }
  if (registry.rfind("postgres://", 0) != 0 && registry.rfind("postgresql://", 0) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--role ", name, " needs --registry postgres://USER@HOST:PORT/DB, the control plane's shared registry (got '",
        registry.empty() ? "sqlite" : registry, "': an SQLite registry belongs to one process's data dir)"));
  }
  return absl::OkStatus();
}

}  // namespace tessera::services
