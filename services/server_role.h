// tessera-server --role: which part of the service one process runs (ARCHITECTURE.md "Scale-out").
//
//   all        everything in one process (the default; today's single server)
//   control    the control plane: every public control-plane API (tenants, keys, datasets, jobs,
//              versions, live pointers, audit, backup), the registry and the blob store; no inference
//              engine and no training (Generate/Score are UNAVAILABLE naming the role)
//   inference  an inference replica: Generate/GenerateStream/Score and the HTTP completions, following
//              live-pointer moves through the shared registry's change feed; read-only control-plane
//              APIs; no job scheduler; registry changes are UNAVAILABLE naming the control plane
//   trainer    a training worker: claims jobs from the shared registry, trains, publishes versions;
//              no public inference; registry changes through the API are UNAVAILABLE as on a replica
//
// inference and trainer share the control plane's registry, so they need --registry postgres://...
// (an SQLite registry belongs to one process's data dir) and --control-plane HOST:PORT; they accept the
// same tenant and admin keys, validated against that shared registry.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera::services {

enum class ServerRole { kAll, kControl, kInference, kTrainer };

// "all" | "control" | "inference" | "trainer"; INVALID_ARGUMENT naming --role otherwise.
absl::StatusOr<ServerRole> ParseServerRole(std::string_view name);
std::string ServerRoleName(ServerRole role);

// What a role runs.
inline bool RoleServesInference(ServerRole r) { return r == ServerRole::kAll || r == ServerRole::kInference; }
inline bool RoleRunsJobs(ServerRole r) { return r == ServerRole::kAll || r == ServerRole::kTrainer; }
// Owns the registry's housekeeping (admin-key bootstrap, blob GC) and serves registry changes.
inline bool RoleIsControlPlane(ServerRole r) { return r == ServerRole::kAll || r == ServerRole::kControl; }

// The flag combinations a role allows: inference/trainer need `control_plane` (HOST:PORT) and a
// PostgreSQL `registry` (not sqlite); all/control take no --control-plane. INVALID_ARGUMENT naming
// the flags otherwise.
absl::Status CheckRoleOptions(ServerRole role, const std::string& registry, const std::string& control_plane);

}  // namespace tessera::services
