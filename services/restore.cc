// Restoring a backup into an empty data dir (see restore.h).
#include "services/restore.h"

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"
#include "storage/backup.h"
#include "storage/registry.h"

namespace tessera::services {

absl::Status CheckBackupBackbone(const BackupManifest& m, const std::string& backbone_sha256) {
  if (m.backbone_sha256 == backbone_sha256) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "the backup was taken on backbone ", m.backbone_name, " (sha256 ", m.backbone_sha256,
      "), this server loads sha256 ", backbone_sha256.empty() ? "(none: random weights)" : backbone_sha256, ": restore with the backup's --backbone"));
}

absl::StatusOr<BackupManifest> RestoreBackup(const std::string& backup_dir, const std::string& data_dir) {
  RETURN_IF_ERROR(storage::CheckEmptyDataDir(data_dir));
  ASSIGN_OR_RETURN(BackupManifest m, VerifyBackupDir(backup_dir));
  if (m.schema_version > storage::Registry::LatestSchemaVersion()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the backup's registry is at schema version ", m.schema_version, ", newer than this binary's ",
        storage::Registry::LatestSchemaVersion(), ": restore it with the server version that wrote it (",
        m.server_version, ") or newer"));
  }
  RETURN_IF_ERROR(storage::InstallBackup(backup_dir, m.files, data_dir));
  ASSIGN_OR_RETURN(std::unique_ptr<storage::Registry> registry, storage::Registry::Open(data_dir));
  const std::string detail = absl::StrCat("{\"files\":", m.files.size(), ",\"bytes\":", m.total_bytes(),
                                          ",\"backup_created_at_us\":", m.created_at_us,
                                          ",\"schema_version\":", m.schema_version, "}");
  RETURN_IF_ERROR(registry->AppendAudit("system", "backup.restore", "backup", detail));
  return m;
}

}  // namespace tessera::services
