#include "services/version_exporter.h"

#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "core/util/sha256.h"

namespace tessera::services {
namespace fs = std::filesystem;

absl::StatusOr<std::unique_ptr<ExportDir>> ExportDir::Create(const std::string& parent) {
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", parent, ": ", ec.message()));
  std::string tmpl = (fs::path(parent) / "export-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("cannot create a directory in ", parent, ": ", std::strerror(errno)));
  }
  return std::unique_ptr<ExportDir>(new ExportDir(tmpl));
}

ExportDir::~ExportDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
  if (on_release) on_release();
}

absl::Status StreamExportedFiles(const ExportDir& dir, int64_t chunk_bytes,
                                 const std::function<bool(const v1::ExportChunk&)>& write) {
  v1::ExportChunk done;
  std::string buf(static_cast<size_t>(chunk_bytes), '\0');
  for (const std::string& rel : dir.files) {
    const std::string path = (fs::path(dir.path()) / rel).string();
    std::ifstream in(path, std::ios::binary);
    if (!in.is_open()) return absl::InternalError(absl::StrCat("export file ", rel, " vanished"));
    Sha256 sha;
    int64_t offset = 0;
    for (;;) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      const std::streamsize n = in.gcount();
      if (in.bad()) return absl::InternalError(absl::StrCat("reading export file ", rel));
      const bool eof = in.eof() || in.peek() == std::char_traits<char>::eof();
      v1::ExportChunk c;
      c.set_path(rel);
      c.set_offset(offset);
      c.set_data(buf.data(), static_cast<size_t>(n));
      sha.Update(buf.data(), static_cast<size_t>(n));
      offset += n;
      if (eof) {
        c.set_eof(true);
        c.set_sha256(sha.FinishHex());
        c.set_size_bytes(offset);
        v1::ExportedFile* f = done.add_files();
        f->set_path(rel);
        f->set_size_bytes(offset);
        f->set_sha256(c.sha256());
      }
      if (!write(c)) return absl::CancelledError("the client went away");
      if (eof) break;
    }
  }
  if (!write(done)) return absl::CancelledError("the client went away");
  return absl::OkStatus();
}

}  // namespace tessera::services
