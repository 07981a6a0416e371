// tessera-admin backup: see backup_client.h.
#include "services/cli/backup_client.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/util/sha256.h"
#include "core/util/status_macros.h"

namespace tessera::cli {
namespace {

namespace fs = std::filesystem;

absl::Status Errno(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status FsyncPath(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno("open for fsync", path);
  const int r = ::fsync(fd);
  ::close(fd);
  if (r != 0) return Errno("fsync", path);
  return absl::OkStatus();
}

// An open output file: unbuffered writes, fsync on Close.
class OutFile {
 public:
  OutFile() = default;
  OutFile(const OutFile&) = delete;
  OutFile& operator=(const OutFile&) = delete;
  ~OutFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  absl::Status Open(const std::string& path) {
    path_ = path;
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0) return Errno("cannot create", path);
    return absl::OkStatus();
  }
  absl::Status Write(const std::string& data) {
    for (size_t off = 0; off < data.size();) {
      const ssize_t w = ::write(fd_, data.data() + off, data.size() - off);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return Errno("writing", path_);
      off += static_cast<size_t>(w);
    }
    return absl::OkStatus();
  }
  absl::Status Close() {
    const bool synced = ::fsync(fd_) == 0;
    const bool closed = ::close(fd_) == 0;
    fd_ = -1;
    if (!synced || !closed) return Errno("writing", path_);
    return absl::OkStatus();
  }

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace

absl::StatusOr<BackupOutcome> WriteBackup(v1::Admin::Stub& stub, grpc::ClientContext* ctx, const std::string& out_dir,
                                          const std::function<void(int64_t, int64_t)>& progress) {
  const absl::Time start = absl::Now();
  std::error_code ec;
  fs::path out = fs::path(out_dir);
  if (out.filename().empty()) out = out.parent_path();  // "dir/" -> "dir"
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec)) return absl::FailedPreconditionError(absl::StrCat("--out ", out.string(), " exists and is not a directory"));
    if (!fs::is_empty(out, ec)) return absl::FailedPreconditionError(absl::StrCat("--out ", out.string(), " exists and is not empty"));
  }
  const fs::path tmp = out.string() + ".partial-" + std::to_string(::getpid());
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec)) {
    return absl::InternalError(absl::StrCat("cannot create ", tmp.string(), ": ", ec.message()));
  }
  struct Cleanup {
    fs::path dir;
    ~Cleanup() {
      std::error_code ignored;
      if (!dir.empty()) fs::remove_all(dir, ignored);
    }
  } cleanup{tmp};

  auto reader = stub.Backup(ctx, v1::BackupRequest());
  auto fail = [&](const std::string& msg) {
    ctx->TryCancel();
    reader->Finish();
    return absl::DataLossError(absl::StrCat("backup stream: ", msg));
  };
  v1::BackupChunk chunk;
  if (!reader->Read(&chunk)) {
    grpc::Status st = reader->Finish();
    if (!st.ok()) return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
    return absl::DataLossError("backup stream: ended before the manifest");
  }
  if (chunk.manifest_json().empty()) return fail("the first message carries no manifest");
  const std::string manifest_text = chunk.manifest_json();
  absl::StatusOr<services::BackupManifest> manifest = services::BackupManifest::FromJson(manifest_text, "the server's manifest");
  if (!manifest.ok()) return fail(std::string(manifest.status().message()));
  std::map<std::string, const storage::BackupFile*> expected;
  for (const storage::BackupFile& f : manifest->files) expected[f.path] = &f;
  const int64_t total = manifest->total_bytes();
  if (progress) progress(0, total);

  std::map<std::string, bool> done;
  std::string current;
  std::unique_ptr<OutFile> file;
  std::unique_ptr<Sha256> sha;
  int64_t written = 0, received = 0;
  std::set<std::string> dirs;
  while (reader->Read(&chunk)) {
    if (!chunk.manifest_json().empty()) return fail("a second manifest");
    if (current.empty()) {
      auto it = expected.find(chunk.path());
      if (it == expected.end()) return fail(absl::StrCat("\"", chunk.path(), "\" is not in the manifest"));
      if (done.count(chunk.path())) return fail(absl::StrCat(chunk.path(), " sent twice"));
      current = chunk.path();
      const fs::path parent = (tmp / current).parent_path();
      if (dirs.insert(parent.string()).second) fs::create_directories(parent, ec);
      file = std::make_unique<OutFile>();
      RETURN_IF_ERROR(file->Open((tmp / current).string()));
      sha = std::make_unique<Sha256>();
      written = 0;
    } else if (chunk.path() != current) {
      return fail(absl::StrCat(chunk.path(), " started before ", current, " ended"));
    }
    if (chunk.offset() != written) {
      return fail(absl::StrCat(current, ": chunk at offset ", chunk.offset(), ", expected ", written));
    }
    RETURN_IF_ERROR(file->Write(chunk.data()));
    sha->Update(chunk.data());
    written += static_cast<int64_t>(chunk.data().size());
    received += static_cast<int64_t>(chunk.data().size());
    if (progress) progress(received, total);
    if (chunk.eof()) {
      RETURN_IF_ERROR(file->Close());
      const std::string got = sha->FinishHex();
      const storage::BackupFile& want = *expected[current];
      if (chunk.size_bytes() != written || chunk.sha256() != got || want.size_bytes != written || want.sha256 != got) {
        return fail(absl::StrCat(current, ": received ", written, " bytes with sha256 ", got, "; the server sent ",
                                 chunk.size_bytes(), " bytes with sha256 ", chunk.sha256(), ", its manifest says ",
                                 want.size_bytes, " bytes with sha256 ", want.sha256));
      }
      done[current] = true;
      current.clear();
    }
  }
  grpc::Status st = reader->Finish();
  if (!st.ok()) return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
  if (!current.empty()) return absl::DataLossError(absl::StrCat("backup stream: ", current, " was cut short"));
  for (const storage::BackupFile& f : manifest->files) {
    if (!done.count(f.path)) return absl::DataLossError(absl::StrCat("backup stream: ", f.path, " never came"));
  }
  {
    OutFile mf;
    RETURN_IF_ERROR(mf.Open((tmp / services::kBackupManifestFile).string()));
    RETURN_IF_ERROR(mf.Write(manifest_text));
    RETURN_IF_ERROR(mf.Close());
  }
  // Re-read from disk: what lands in DIR is what a restore will check.
  absl::StatusOr<services::BackupManifest> verified = services::VerifyBackupDir(tmp.string());
  if (!verified.ok()) {
    return absl::DataLossError(absl::StrCat("the written backup does not verify: ", verified.status().message()));
  }
  for (const std::string& d : dirs) RETURN_IF_ERROR(FsyncPath(d, true));
  RETURN_IF_ERROR(FsyncPath(tmp.string(), true));
  if (fs::exists(out, ec)) fs::remove(out, ec);  // empty (checked above)
  fs::rename(tmp, out, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot rename ", tmp.string(), " to ", out.string(), ": ", ec.message()));
  cleanup.dir.clear();
  fs::path parent = fs::absolute(out).parent_path();
  RETURN_IF_ERROR(FsyncPath(parent.string(), true));
  BackupOutcome outcome;
  outcome.manifest = *std::move(verified);
  outcome.out_dir = out.string();
  outcome.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return outcome;
}

}  // namespace tessera::cli
