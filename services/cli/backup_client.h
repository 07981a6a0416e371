// tessera-admin backup --out DIR: receives Admin.Backup's stream and writes the backup directory.
//
// Contract: DIR must not exist, or be an empty directory. The files are written into DIR.partial-<pid>
// beside it (each fsynced): every chunk's path must be one the manifest lists (so nothing is written
// outside the directory), offsets contiguous, and each file's received size and sha256 must equal both
// the server's end-of-file figures and the manifest's. Then manifest.json is written, the whole
// directory is re-read and checked against it (VerifyBackupDir: sizes, digests, the registry's schema
// and blob references), and only then renamed to DIR: DIR never holds a partial or unverified backup.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "services/backup_manifest.h"
#include "tessera/v1/admin.grpc.pb.h"

namespace tessera::cli {

struct BackupOutcome {
  services::BackupManifest manifest;
  std::string out_dir;
  double seconds = 0;
};

// `ctx` carries the admin key. `progress` (may be null) gets (bytes received, total bytes).
absl::StatusOr<BackupOutcome> WriteBackup(v1::Admin::Stub& stub, grpc::ClientContext* ctx, const std::string& out_dir,
                                          const std::function<void(int64_t done, int64_t total)>& progress);

}  // namespace tessera::cli
