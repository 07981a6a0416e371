// tessera-server --restore DIR --data-dir NEW: turns a backup directory (tessera-admin backup) into a
// data dir the server then serves.
//
// RestoreBackup refuses, before writing anything: a data dir that exists and is not empty
// (FAILED_PRECONDITION), a directory that does not match its manifest (a missing, extra, resized or
// altered file: every file is re-hashed; FAILED_PRECONDITION / DATA_LOSS naming the file), and a
// registry schema newer than this binary's. Then it installs the snapshot and blobs atomically
// (storage/backup.h), opens the registry once (migrating an older schema forward, requeueing the jobs
// that were RUNNING at the backup so they resume from their checkpoints) and audits "backup.restore".
// API keys are restored as their hashes: every key that worked on the backed-up server works here
// (admin.key is not part of a backup; keep the admin key you used).
//
// The backbone's digest is known only once its weights are loaded, so tessera-server checks it with
// CheckBackupBackbone when its engine is built, before it listens, and removes the restored data dir
// if it fails: the backup's versions were trained on the backup's backbone.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "services/backup_manifest.h"

namespace tessera::services {

absl::StatusOr<BackupManifest> RestoreBackup(const std::string& backup_dir, const std::string& data_dir);

// FAILED_PRECONDITION naming both digests when the backup was taken on another backbone than
// `backbone_sha256` (the loaded one).
absl::Status CheckBackupBackbone(const BackupManifest& manifest, const std::string& backbone_sha256);

}  // namespace tessera::services
