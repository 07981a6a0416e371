// The manifest of a Tessera backup directory (manifest.json) and its verification. Shared by the
// server (Admin.Backup sends it first; tessera-server --restore checks a directory against it) and
// tessera-admin backup (writes it after checking every file it received).
//
// manifest.json:
//   {"format": "tessera-backup", "format_version": 1, "created_at": "2026-12-06T20:00:00Z",
//    "created_at_us": ..., "server_version": "...", "schema_version": 9,
//    "backbone": {"name": "builtin:tiny", "sha256": "<hex>"},
//    "counts": {"tenants": .., "api_keys": .., "datasets": .., "jobs": .., "jobs_unfinished": ..,
//               "versions": ..},
//    "files": [{"path": "registry.db", "size_bytes": .., "sha256": ".."},
//              {"path": "blobs/ab/ab12...", ...}, ...],
//    "total_bytes": ..}
// A backup directory holds exactly manifest.json and the listed files.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/backup.h"

namespace tessera::services {

inline constexpr char kBackupManifestFile[] = "manifest.json";
inline constexpr char kBackupFormat[] = "tessera-backup";
inline constexpr int kBackupFormatVersion = 1;

struct BackupManifest {
  int format_version = kBackupFormatVersion;
  int64_t created_at_us = 0;
  std::string server_version;
  int schema_version = 0;
  std::string backbone_name;
  std::string backbone_sha256;
  storage::BackupCounts counts;
  std::vector<storage::BackupFile> files;

  int64_t total_bytes() const;
  std::string ToJson() const;  // pretty-printed, ends with '\n'
  // INVALID_ARGUMENT naming `source` and the field for anything malformed: wrong format or version,
  // missing fields, a file path that is not registry.db or blobs/<2 hex>/<sha256> (so nothing can
  // point outside the directory), duplicates, a bad digest or a negative size.
  static absl::StatusOr<BackupManifest> FromJson(std::string_view json, std::string_view source);
};

// Reads DIR/manifest.json and checks DIR against it: every listed file present with its size and
// sha256 (hashed in full), no other file, and registry.db's own schema version and references
// matching (every blob the registry needs is in the backup). FAILED_PRECONDITION for a missing or
// unexpected file, DATA_LOSS for a size or digest mismatch (naming the file and both values),
// INVALID_ARGUMENT for a malformed manifest. `progress` (may be null) gets (bytes hashed, total).
absl::StatusOr<BackupManifest> VerifyBackupDir(const std::string& dir,
                                               const std::function<void(int64_t done, int64_t total)>& progress = nullptr);

}  // namespace tessera::services
