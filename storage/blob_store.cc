// BlobStore: see blob_store.h for the layout and the durability contract.
#include "storage/blob_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "storage/fs_util.h"
#include "storage/sv.h"
#include "storage/random_id.h"
#include "core/util/crash_point.h"
#include "core/util/sha256.h"

namespace tessera::storage {
namespace {

absl::Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) return ErrnoStatus("mkdir", path);
  return absl::OkStatus();
}

absl::Status WriteAll(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write", path);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

// Streams the file through SHA-256; optionally keeps the bytes.
absl::StatusOr<std::string> HashFile(const std::string& path, std::string* bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open", path);
  Sha256 h;
  char buf[1 << 16];
  while (true) {
    const ssize_t r = ::read(fd, buf, sizeof(buf));
    if (r < 0) {
      if (errno == EINTR) continue;
      absl::Status s = ErrnoStatus("read", path);
      ::close(fd);
      return s;
    }
    if (r == 0) break;
    h.Update(buf, static_cast<size_t>(r));
    if (bytes != nullptr) bytes->append(buf, static_cast<size_t>(r));
  }
  ::close(fd);
  return h.FinishHex();
}

}  // namespace

bool BlobStore::IsValidDigest(std::string_view digest) {
  if (digest.size() != 64) return false;
  for (char c : digest) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

absl::StatusOr<std::unique_ptr<BlobStore>> BlobStore::Create(const std::string& root_dir) {
  if (root_dir.empty()) return absl::InvalidArgumentError("BlobStore root_dir is empty");
  std::error_code ec;
  std::filesystem::create_directories(root_dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create blob dir ", root_dir, ": ", ec.message()));
  }
  if (absl::Status s = MakeDir(root_dir + "/tmp"); !s.ok()) return s;
  return std::unique_ptr<BlobStore>(new BlobStore(root_dir));
}

absl::StatusOr<std::string> BlobStore::Path(std::string_view digest) const {
  if (!IsValidDigest(digest)) {
    return absl::InvalidArgumentError(
        absl::StrCat("blob digest must be 64 lowercase hex characters, got '", Sv(digest), "'"));
  }
  return absl::StrCat(root_, "/", Sv(digest.substr(0, 2)), "/", Sv(digest));
}

absl::StatusOr<std::string> BlobStore::Commit(const std::string& tmp_path,
                                              const std::string& digest) {
  const std::string shard = absl::StrCat(root_, "/", digest.substr(0, 2));
  struct stat st;
  const bool shard_existed = ::stat(shard.c_str(), &st) == 0;
  if (!shard_existed) {
    if (absl::Status s = MakeDir(shard); !s.ok()) return s;
    if (absl::Status s = FsyncPath(root_, true); !s.ok()) return s;
  }
  const std::string final_path = absl::StrCat(shard, "/", digest);
  util::CrashPoint("blob.commit.temp_synced");  // crash tests: a written temp file, no blob yet
  if (::rename(tmp_path.c_str(), final_path.c_str()) != 0) {
    absl::Status s = ErrnoStatus("rename to", final_path);
    ::unlink(tmp_path.c_str());
    return s;
  }
  util::CrashPoint("blob.commit.renamed");  // crash tests: the blob in place, its directory not synced
  if (absl::Status s = FsyncPath(shard, true); !s.ok()) return s;
  return digest;
}

absl::StatusOr<std::string> BlobStore::Put(std::string_view bytes) {
  const std::string digest = Sha256Hex(bytes);
  const std::string final_path = absl::StrCat(root_, "/", digest.substr(0, 2), "/", digest);
  // Already stored (with the right size; a damaged copy is simply replaced below): refresh mtime so the
  // GC grace period restarts. ENOENT (a concurrent GC removed it just now) falls through to a write.
  struct stat st;
  if (::stat(final_path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
      static_cast<size_t>(st.st_size) == bytes.size()) {
    if (::utimensat(AT_FDCWD, final_path.c_str(), nullptr, 0) == 0) return digest;
    if (errno != ENOENT) return ErrnoStatus("utimensat", final_path);
  }

  absl::StatusOr<std::string> rnd = RandomBase62(16);
  if (!rnd.ok()) return rnd.status();
  const std::string tmp_path = absl::StrCat(root_, "/tmp/", digest.substr(0, 8), "-", *rnd, ".tmp");
  const int fd = ::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("create", tmp_path);
  absl::Status s = WriteAll(fd, bytes.data(), bytes.size(), tmp_path);
  if (s.ok() && ::fsync(fd) != 0) s = ErrnoStatus("fsync", tmp_path);
  ::close(fd);
  if (!s.ok()) {
    ::unlink(tmp_path.c_str());
    return s;
  }
  return Commit(tmp_path, digest);
}

absl::StatusOr<std::string> BlobStore::PutFile(const std::string& path) {
  const int in = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return ErrnoStatus("open", path);
  absl::StatusOr<std::string> rnd = RandomBase62(16);
  if (!rnd.ok()) {
    ::close(in);
    return rnd.status();
  }
  const std::string tmp_path = absl::StrCat(root_, "/tmp/file-", *rnd, ".tmp");
  const int out = ::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (out < 0) {
    absl::Status s = ErrnoStatus("create", tmp_path);
    ::close(in);
    return s;
  }
  Sha256 h;
  absl::Status s;
  char buf[1 << 16];
  while (s.ok()) {
    const ssize_t r = ::read(in, buf, sizeof(buf));
    if (r < 0) {
      if (errno == EINTR) continue;
      s = ErrnoStatus("read", path);
      break;
    }
    if (r == 0) break;
    h.Update(buf, static_cast<size_t>(r));
    s = WriteAll(out, buf, static_cast<size_t>(r), tmp_path);
  }
  if (s.ok() && ::fsync(out) != 0) s = ErrnoStatus("fsync", tmp_path);
  ::close(in);
  ::close(out);
  if (!s.ok()) {
    ::unlink(tmp_path.c_str());
    return s;
  }
  const std::string digest = h.FinishHex();
  const std::string final_path = absl::StrCat(root_, "/", digest.substr(0, 2), "/", digest);
  if (::utimensat(AT_FDCWD, final_path.c_str(), nullptr, 0) == 0) {
    ::unlink(tmp_path.c_str());
    return digest;
  }
  return Commit(tmp_path, digest);
}

absl::StatusOr<std::string> BlobStore::Get(std::string_view digest) const {
  absl::StatusOr<std::string> path = Path(digest);
  if (!path.ok()) return path.status();
  std::string bytes;
  absl::StatusOr<std::string> actual = HashFile(*path, &bytes);
  if (!actual.ok()) {
    if (absl::IsNotFound(actual.status())) {
      return absl::NotFoundError(absl::StrCat("blob ", Sv(digest), " not found"));
    }
    return actual.status();
  }
  if (*actual != digest) {
    return absl::DataLossError(
        absl::StrCat("blob ", Sv(digest), " is corrupt: its content hashes to ", *actual));
  }
  return bytes;
}

absl::Status BlobStore::Verify(std::string_view digest) const {
  absl::StatusOr<std::string> path = Path(digest);
  if (!path.ok()) return path.status();
  absl::StatusOr<std::string> actual = HashFile(*path, nullptr);
  if (!actual.ok()) {
    if (absl::IsNotFound(actual.status())) {
      return absl::NotFoundError(absl::StrCat("blob ", Sv(digest), " not found"));
    }
    return actual.status();
  }
  if (*actual != digest) {
    return absl::DataLossError(
        absl::StrCat("blob ", Sv(digest), " is corrupt: its content hashes to ", *actual));
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> BlobStore::Exists(std::string_view digest) const {
  absl::StatusOr<std::string> path = Path(digest);
  if (!path.ok()) return path.status();
  struct stat st;
  if (::stat(path->c_str(), &st) == 0) return S_ISREG(st.st_mode);
  if (errno == ENOENT) return false;
  return ErrnoStatus("stat", *path);
}

absl::StatusOr<int64_t> BlobStore::Size(std::string_view digest) const {
  absl::StatusOr<std::string> path = Path(digest);
  if (!path.ok()) return path.status();
  struct stat st;
  if (::stat(path->c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("blob ", Sv(digest), " not found"));
    return ErrnoStatus("stat", *path);
  }
  return static_cast<int64_t>(st.st_size);
}

absl::StatusOr<absl::Time> BlobStore::LastWritten(std::string_view digest) const {
  absl::StatusOr<std::string> path = Path(digest);
  if (!path.ok()) return path.status();
  struct stat st;
  if (::stat(path->c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("blob ", Sv(digest), " not found"));
    return ErrnoStatus("stat", *path);
  }
  return absl::TimeFromTimespec(st.st_mtim);
}

absl::Status BlobStore::Delete(std::string_view digest) {
  absl::StatusOr<std::string> path = Path(digest);
  if (!path.ok()) return path.status();
  if (::unlink(path->c_str()) != 0 && errno != ENOENT) return ErrnoStatus("unlink", *path);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> BlobStore::ListDigests() const {
  std::vector<std::string> out;
  DIR* root = ::opendir(root_.c_str());
  if (root == nullptr) return ErrnoStatus("opendir", root_);
  while (dirent* shard = ::readdir(root)) {
    const std::string name = shard->d_name;
    if (name.size() != 2) continue;  // skips ".", "..", "tmp"
    const std::string shard_path = absl::StrCat(root_, "/", name);
    DIR* d = ::opendir(shard_path.c_str());
    if (d == nullptr) continue;  // not a directory, or removed concurrently
    while (dirent* e = ::readdir(d)) {
      const std::string_view f = e->d_name;
      if (IsValidDigest(f) && f.substr(0, 2) == name) out.emplace_back(f);
    }
    ::closedir(d);
  }
  ::closedir(root);
  return out;
}

absl::StatusOr<int64_t> BlobStore::CollectTemps(absl::Duration min_age) {
  const std::string tmp_dir = root_ + "/tmp";
  DIR* d = ::opendir(tmp_dir.c_str());
  if (d == nullptr) return ErrnoStatus("opendir", tmp_dir);
  const absl::Time cutoff = absl::Now() - min_age;
  int64_t removed = 0;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    const std::string p = absl::StrCat(tmp_dir, "/", name);
    struct stat st;
    if (::stat(p.c_str(), &st) != 0) continue;
    if (absl::TimeFromTimespec(st.st_mtim) <= cutoff && ::unlink(p.c_str()) == 0) ++removed;
  }
  ::closedir(d);
  return removed;
}

}  // namespace tessera::storage
