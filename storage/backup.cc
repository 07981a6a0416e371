// Registry backup and restore: see backup.h for the consistency argument and the restore contract.
#include "storage/backup.h"

#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "core/util/sha256.h"
#include "core/util/status_macros.h"
#include "storage/blob_store.h"
#include "storage/fs_util.h"
#include "storage/random_id.h"

namespace tessera::storage {
namespace {

namespace fs = std::filesystem;

constexpr char kStagingDir[] = "backup-staging";

// Copies src to dst (created, must not exist) and fsyncs dst.
absl::Status CopyFileSynced(const std::string& src, const std::string& dst) {
  const int in = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return ErrnoStatus("open", src);
  const int out = ::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (out < 0) {
    absl::Status s = ErrnoStatus("create", dst);
    ::close(in);
    return s;
  }
  absl::Status s;
  char buf[1 << 16];
  while (s.ok()) {
    const ssize_t r = ::read(in, buf, sizeof(buf));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      s = ErrnoStatus("read", src);
      break;
    }
    if (r == 0) break;
    for (ssize_t off = 0; off < r && s.ok();) {
      const ssize_t w = ::write(out, buf + off, static_cast<size_t>(r - off));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) s = ErrnoStatus("write", dst);
      if (w > 0) off += w;
    }
  }
  if (s.ok() && ::fsync(out) != 0) s = ErrnoStatus("fsync", dst);
  ::close(in);
  ::close(out);
  return s;
}

// A hard link (the bytes stay readable whatever happens to src's name), or a copy across filesystems.
absl::Status LinkOrCopy(const std::string& src, const std::string& dst) {
  if (::link(src.c_str(), dst.c_str()) == 0) return absl::OkStatus();
  if (errno == EXDEV || errno == EPERM || errno == EMLINK) return CopyFileSynced(src, dst);
  return ErrnoStatus("link", src);
}

absl::Status MakeDirs(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", path, ": ", ec.message()));
  return absl::OkStatus();
}

std::string BlobRelPath(const std::string& digest) {
  return absl::StrCat("blobs/", digest.substr(0, 2), "/", digest);
}

// An sqlite3 handle closed on scope exit.
struct Db {
  sqlite3* db = nullptr;
  ~Db() {
    if (db != nullptr) sqlite3_close_v2(db);
  }
  absl::Status Open(const std::string& path, int flags) {
    const int rc = sqlite3_open_v2(path.c_str(), &db, flags | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) return Error(rc, absl::StrCat("open ", path));
    sqlite3_busy_timeout(db, 5000);
    return absl::OkStatus();
  }
  absl::Status Error(int rc, const std::string& what) const {
    return absl::InternalError(
        absl::StrCat("sqlite: ", what, ": ", db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
  }
  absl::Status Exec(const std::string& sql) {
    char* err = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    if (rc == SQLITE_OK) return absl::OkStatus();
    std::string msg = err != nullptr ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    return absl::InternalError(absl::StrCat("sqlite: ", sql, ": ", msg));
  }
  // Rows of a one-column query as text.
  absl::StatusOr<std::vector<std::string>> Column(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    int rc = sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr);
    if (rc != SQLITE_OK) return Error(rc, sql);
    std::vector<std::string> out;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      const unsigned char* t = sqlite3_column_text(st, 0);
      out.emplace_back(t != nullptr ? reinterpret_cast<const char*>(t) : "");
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return Error(rc, sql);
    return out;
  }
  absl::StatusOr<int64_t> Int(const std::string& sql) {
    ASSIGN_OR_RETURN(std::vector<std::string> rows, Column(sql));
    int64_t v = 0;
    if (!rows.empty() && !rows[0].empty() && !absl::SimpleAtoi(rows[0], &v)) {
      return absl::InternalError(absl::StrCat("sqlite: ", sql, ": not an integer: ", rows[0]));
    }
    return v;
  }
};

// Removes staging dirs of processes that are gone (a crash mid-backup leaves one behind).
void RemoveStaleStaging(const std::string& staging_root) {
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(staging_root, ec)) {
    const std::string name = e.path().filename().string();
    int64_t pid = 0;
    const std::vector<std::string> parts = absl::StrSplit(name, absl::MaxSplits('-', 1));
    if (!absl::SimpleAtoi(parts[0], &pid) || pid <= 0) continue;
    if (pid == ::getpid()) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    std::error_code ignored;
    fs::remove_all(e.path(), ignored);
  }
}

// Digests of the blobs in <data_dir>/blobs (the shard directories; tmp/ skipped).
std::vector<std::string> PresentBlobs(const std::string& blob_root) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const fs::directory_entry& shard : fs::directory_iterator(blob_root, ec)) {
    const std::string s = shard.path().filename().string();
    if (s.size() != 2 || !shard.is_directory(ec)) continue;
    for (const fs::directory_entry& f : fs::directory_iterator(shard.path(), ec)) {
      const std::string d = f.path().filename().string();
      if (BlobStore::IsValidDigest(d) && d.compare(0, 2, s) == 0) out.push_back(d);
    }
  }
  return out;
}

// Copies the live database at src_path into dst_path as of one commit (online backup API, one step).
absl::Status SnapshotDatabase(const std::string& src_path, const std::string& dst_path) {
  Db src, dst;
  RETURN_IF_ERROR(src.Open(src_path, SQLITE_OPEN_READWRITE));
  RETURN_IF_ERROR(dst.Open(dst_path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE));
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  for (;;) {
    sqlite3_backup* b = sqlite3_backup_init(dst.db, "main", src.db, "main");
    if (b == nullptr) return dst.Error(sqlite3_errcode(dst.db), "backup init");
    const int rc = sqlite3_backup_step(b, -1);  // all pages inside one read transaction
    const int fin = sqlite3_backup_finish(b);
    if (rc == SQLITE_DONE && fin == SQLITE_OK) break;
    const bool busy = rc == SQLITE_BUSY || rc == SQLITE_LOCKED;
    if (!busy || absl::Now() > deadline) {
      return absl::Status(busy ? absl::StatusCode::kUnavailable : absl::StatusCode::kInternal,
                          absl::StrCat("sqlite backup of ", src_path, ": ", sqlite3_errstr(rc)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // One self-contained file (no -wal beside it); a restored server switches it back to WAL.
  RETURN_IF_ERROR(dst.Exec("PRAGMA journal_mode=DELETE"));
  ASSIGN_OR_RETURN(std::vector<std::string> check, dst.Column("PRAGMA integrity_check"));
  if (check.size() != 1 || check[0] != "ok") {
    return absl::DataLossError(absl::StrCat("the registry copy fails integrity_check: ",
                                            check.empty() ? "(no answer)" : check[0]));
  }
  return absl::OkStatus();
}

absl::StatusOr<RegistryFileInfo> InspectOpen(Db& db) {
  RegistryFileInfo info;
  ASSIGN_OR_RETURN(int64_t schema, db.Int("SELECT MAX(version) FROM schema_migrations"));
  info.schema_version = static_cast<int>(schema);
  ASSIGN_OR_RETURN(info.counts.tenants, db.Int("SELECT COUNT(*) FROM tenants"));
  ASSIGN_OR_RETURN(info.counts.api_keys, db.Int("SELECT COUNT(*) FROM api_keys"));
  ASSIGN_OR_RETURN(info.counts.datasets, db.Int("SELECT COUNT(*) FROM datasets"));
  ASSIGN_OR_RETURN(info.counts.jobs, db.Int("SELECT COUNT(*) FROM jobs"));
  ASSIGN_OR_RETURN(info.counts.jobs_unfinished,
                   db.Int("SELECT COUNT(*) FROM jobs WHERE state IN ('QUEUED', 'RUNNING')"));
  ASSIGN_OR_RETURN(info.counts.versions, db.Int("SELECT COUNT(*) FROM versions"));
  // The same references the garbage collector keeps (storage/registry_gc.cc).
  ASSIGN_OR_RETURN(info.referenced_blobs,
                   db.Column("SELECT blob_digest FROM datasets UNION "
                             "SELECT blob_digest FROM versions UNION "
                             "SELECT checkpoint FROM jobs WHERE state IN ('QUEUED', 'RUNNING') "
                             "AND checkpoint != '' ORDER BY 1"));
  for (const std::string& d : info.referenced_blobs) {
    if (!BlobStore::IsValidDigest(d)) {
      return absl::DataLossError(absl::StrCat("the registry names a malformed blob digest '", d, "'"));
    }
  }
  return info;
}

}  // namespace

absl::StatusOr<RegistryFileInfo> InspectRegistryFile(const std::string& db_path) {
  Db db;
  RETURN_IF_ERROR(db.Open(db_path, SQLITE_OPEN_READONLY));
  return InspectOpen(db);
}

int64_t RegistrySnapshot::total_bytes() const {
  int64_t total = 0;
  for (const BackupFile& f : files_) total += f.size_bytes;
  return total;
}

RegistrySnapshot::~RegistrySnapshot() {
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

absl::StatusOr<std::unique_ptr<RegistrySnapshot>> RegistrySnapshot::Take(const std::string& data_dir) {
  const std::string db_path = absl::StrCat(data_dir, "/", kBackupRegistryFile);
  struct stat st;
  if (::stat(db_path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("no SQLite registry at ", db_path,
                                            " (backup copies the SQLite registry of the data dir)"));
  }
  const std::string staging_root = absl::StrCat(data_dir, "/", kStagingDir);
  RETURN_IF_ERROR(MakeDirs(staging_root));
  RemoveStaleStaging(staging_root);
  ASSIGN_OR_RETURN(std::string id, RandomBase62(10));
  std::unique_ptr<RegistrySnapshot> snap(
      new RegistrySnapshot(absl::StrCat(staging_root, "/", ::getpid(), "-", id)));
  RETURN_IF_ERROR(MakeDirs(snap->dir_ + "/blobs"));

  // 1. Link every blob present now.
  const std::string blob_root = data_dir + "/blobs";
  std::set<std::string> linked;
  std::set<std::string> shards;
  auto link_blob = [&](const std::string& digest) -> absl::Status {
    const std::string shard = digest.substr(0, 2);
    if (shards.insert(shard).second) RETURN_IF_ERROR(MakeDirs(absl::StrCat(snap->dir_, "/blobs/", shard)));
    RETURN_IF_ERROR(LinkOrCopy(absl::StrCat(blob_root, "/", shard, "/", digest),
                               absl::StrCat(snap->dir_, "/", BlobRelPath(digest))));
    linked.insert(digest);
    return absl::OkStatus();
  };
  for (const std::string& digest : PresentBlobs(blob_root)) {
    absl::Status s = link_blob(digest);
    if (absl::IsNotFound(s)) continue;  // collected meanwhile: if the copy needs it, step 3 says so
    RETURN_IF_ERROR(s);
  }

  // 2. The database as of one commit.
  const std::string copy_path = absl::StrCat(snap->dir_, "/", kBackupRegistryFile);
  RETURN_IF_ERROR(SnapshotDatabase(db_path, copy_path));

  // 3. Exactly the blobs the copy references.
  ASSIGN_OR_RETURN(RegistryFileInfo info, InspectRegistryFile(copy_path));
  snap->schema_version_ = info.schema_version;
  snap->counts_ = info.counts;
  for (const std::string& digest : info.referenced_blobs) {
    if (linked.count(digest)) continue;
    absl::Status s = link_blob(digest);
    if (absl::IsNotFound(s)) {
      return absl::UnavailableError(absl::StrCat(
          "blob ", digest, " that the registry references vanished during the backup (a garbage "
          "collection grace period shorter than the backup?); retry"));
    }
    RETURN_IF_ERROR(s);
  }
  const std::set<std::string> wanted(info.referenced_blobs.begin(), info.referenced_blobs.end());
  for (const std::string& digest : linked) {
    if (wanted.count(digest) == 0) ::unlink(absl::StrCat(snap->dir_, "/", BlobRelPath(digest)).c_str());
  }

  BackupFile reg;
  reg.path = kBackupRegistryFile;
  ASSIGN_OR_RETURN(reg.sha256, Sha256FileHex(copy_path));
  if (::stat(copy_path.c_str(), &st) != 0) return ErrnoStatus("stat", copy_path);
  reg.size_bytes = st.st_size;
  snap->files_.push_back(reg);
  for (const std::string& digest : info.referenced_blobs) {  // sorted by the query
    BackupFile f;
    f.path = BlobRelPath(digest);
    f.sha256 = digest;
    const std::string p = absl::StrCat(snap->dir_, "/", f.path);
    if (::stat(p.c_str(), &st) != 0) return ErrnoStatus("stat", p);
    f.size_bytes = st.st_size;
    snap->files_.push_back(f);
  }
  return snap;
}

absl::Status CheckEmptyDataDir(const std::string& data_dir) {
  std::error_code ec;
  if (!fs::exists(data_dir, ec)) return absl::OkStatus();
  if (!fs::is_directory(data_dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("--data-dir ", data_dir, " exists and is not a directory; a restore needs an empty one"));
  }
  fs::directory_iterator it(data_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", data_dir, ": ", ec.message()));
  if (it != fs::directory_iterator()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--data-dir ", data_dir, " is not empty (it holds ", it->path().filename().string(),
        "); a restore never overwrites a data dir: give a new or empty directory"));
  }
  return absl::OkStatus();
}

absl::Status InstallBackup(const std::string& backup_dir, const std::vector<BackupFile>& files,
                           const std::string& data_dir) {
  RETURN_IF_ERROR(CheckEmptyDataDir(data_dir));
  int registries = 0;
  for (const BackupFile& f : files) {
    if (f.path == kBackupRegistryFile) {
      ++registries;
    } else if (f.path != BlobRelPath(f.sha256) || !BlobStore::IsValidDigest(f.sha256)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "backup file ", f.path, " is neither ", kBackupRegistryFile, " nor blobs/<2 hex>/<sha256>"));
    }
  }
  if (registries != 1) {
    return absl::InvalidArgumentError(absl::StrCat("a backup holds one ", kBackupRegistryFile, ", this one ",
                                                   registries));
  }
  fs::path target = fs::absolute(data_dir);
  if (target.filename().empty()) target = target.parent_path();  // "dir/" -> "dir"
  RETURN_IF_ERROR(MakeDirs(target.parent_path().string()));
  ASSIGN_OR_RETURN(std::string id, RandomBase62(8));
  const std::string tmp = absl::StrCat(target.string(), ".restore-", id);
  RETURN_IF_ERROR(MakeDirs(tmp + "/blobs/tmp"));
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ignored;
      if (!dir.empty()) fs::remove_all(dir, ignored);
    }
  } cleanup{tmp};

  std::set<std::string> shards;
  for (const BackupFile& f : files) {
    if (f.path != kBackupRegistryFile) {
      const std::string shard = absl::StrCat(tmp, "/blobs/", f.sha256.substr(0, 2));
      if (shards.insert(shard).second) RETURN_IF_ERROR(MakeDirs(shard));
    }
    RETURN_IF_ERROR(CopyFileSynced(absl::StrCat(backup_dir, "/", f.path), absl::StrCat(tmp, "/", f.path)));
  }
  {
    // Jobs that were RUNNING at the backup: their lease expires now, so the first Registry::Open
    // requeues them (resuming from the checkpoint included in the backup).
    Db db;
    RETURN_IF_ERROR(db.Open(absl::StrCat(tmp, "/", kBackupRegistryFile), SQLITE_OPEN_READWRITE));
    RETURN_IF_ERROR(db.Exec("PRAGMA synchronous=FULL"));
    RETURN_IF_ERROR(db.Exec("UPDATE jobs SET lease_expires_at_us = 0 WHERE state = 'RUNNING'"));
  }
  RETURN_IF_ERROR(FsyncPath(absl::StrCat(tmp, "/", kBackupRegistryFile), false));
  for (const std::string& shard : shards) RETURN_IF_ERROR(FsyncPath(shard, true));
  RETURN_IF_ERROR(FsyncPath(tmp + "/blobs", true));
  RETURN_IF_ERROR(FsyncPath(tmp, true));
  // rename(2) replaces an empty directory atomically; re-checked emptiness above.
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    return ErrnoStatus(absl::StrCat("rename ", tmp, " to"), target.string());
  }
  cleanup.dir.clear();
  return FsyncPath(target.parent_path().string(), true);
}

}  // namespace tessera::storage
