// Online backup of a data dir's registry (SQLite) plus every blob it references, and restoring one
// into an empty data dir. Works on the files of a data dir, beside a running server (no Registry
// object needed), so a backup never stops writers.
//
// Consistency of RegistrySnapshot::Take, while jobs train, versions publish and pointers move:
//   1. every blob present is hard-linked into a private staging dir, data_dir/backup-staging/<pid>-<id>
//      (a link keeps the bytes readable even if the garbage collector unlinks the blob afterwards);
//   2. registry.db is copied with SQLite's online backup API in a single step: one read transaction of
//      the WAL database, so writers carry on and the copy is the database as of one commit;
//   3. the copy's references (dataset and version blobs, checkpoints of QUEUED/RUNNING jobs) are listed;
//      a referenced blob written after step 1 is linked now (it is younger than the GC's grace period,
//      so the collector has not deleted it), and links nothing references are dropped.
// So every row of the copy has its blob in the staging dir, byte for byte what the row's digest names.
// The copy is switched to journal_mode=DELETE (one self-contained file) and integrity-checked.
//
// Restore (InstallBackup): data_dir must be absent or an empty directory. The files are assembled in
// a sibling directory (registry.db, blobs/<2 hex>/<digest>), fsynced, and renamed onto data_dir in one
// rename(2), so a failed restore leaves data_dir as it was. Jobs RUNNING in the copy get an expired
// lease, so the restored server's first Registry::Open requeues them and they resume from the
// checkpoint the backup carries (or fail after max attempts, as after any crash).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera::storage {

// One file of a backup, relative to the backup directory ('/'-separated).
struct BackupFile {
  std::string path;  // "registry.db" or "blobs/<2 hex>/<64 hex>"
  int64_t size_bytes = 0;
  std::string sha256;  // lowercase hex of the bytes (for a blob: its name)
};

// Rows in a registry copy (what a restore must bring back).
struct BackupCounts {
  int64_t tenants = 0;
  int64_t api_keys = 0;  // revoked ones included
  int64_t datasets = 0;
  int64_t jobs = 0;
  int64_t jobs_unfinished = 0;  // QUEUED or RUNNING
  int64_t versions = 0;
};

// The registry file's name inside a backup and a data dir.
inline constexpr char kBackupRegistryFile[] = "registry.db";

class RegistrySnapshot {
 public:
  // Takes the snapshot of `data_dir` (registry.db + blobs/) described above. NOT_FOUND when the data
  // dir has no registry.db (e.g. the registry is not SQLite); UNAVAILABLE when a referenced blob
  // vanished (only with a GC grace period shorter than the backup: retry).
  static absl::StatusOr<std::unique_ptr<RegistrySnapshot>> Take(const std::string& data_dir);
  ~RegistrySnapshot();  // removes the staging dir
  RegistrySnapshot(const RegistrySnapshot&) = delete;
  RegistrySnapshot& operator=(const RegistrySnapshot&) = delete;

  // The staging directory holding the files (paths in files() are relative to it).
  const std::string& dir() const { return dir_; }
  // registry.db first, then the blobs sorted by path. registry.db's sha256 is computed; a blob's is
  // its name (content-addressed), which the streaming side re-checks as it reads.
  const std::vector<BackupFile>& files() const { return files_; }
  int schema_version() const { return schema_version_; }
  const BackupCounts& counts() const { return counts_; }
  int64_t total_bytes() const;

 private:
  explicit RegistrySnapshot(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
  std::vector<BackupFile> files_;
  int schema_version_ = 0;
  BackupCounts counts_;
};

// What a registry copy says about itself (opened read-only): its migration number, its rows, and the
// blob digests its rows need (datasets, versions, checkpoints of unfinished jobs), sorted, unique.
struct RegistryFileInfo {
  int schema_version = 0;
  BackupCounts counts;
  std::vector<std::string> referenced_blobs;
};
absl::StatusOr<RegistryFileInfo> InspectRegistryFile(const std::string& db_path);

// OK when `data_dir` does not exist or is an empty directory; else FAILED_PRECONDITION naming it and
// one of its entries.
absl::Status CheckEmptyDataDir(const std::string& data_dir);

// Installs the already verified `files` of `backup_dir` (one kBackupRegistryFile plus blobs) as
// `data_dir` (see the top comment). FAILED_PRECONDITION for a non-empty data_dir, INVALID_ARGUMENT
// for a path that is neither registry.db nor blobs/<2 hex>/<digest>.
absl::Status InstallBackup(const std::string& backup_dir, const std::vector<BackupFile>& files,
                           const std::string& data_dir);

}  // namespace tessera::storage
