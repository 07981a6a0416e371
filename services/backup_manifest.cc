// Backup manifest: JSON form and directory verification (see backup_manifest.h).
#include "services/backup_manifest.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/util/sha256.h"
#include "core/util/status_macros.h"
#include "nlohmann/json.hpp"
#include "storage/blob_store.h"

namespace tessera::services {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

bool ValidFilePath(const storage::BackupFile& f) {
  if (f.path == storage::kBackupRegistryFile) return true;
  return storage::BlobStore::IsValidDigest(f.sha256) &&
         f.path == absl::StrCat("blobs/", f.sha256.substr(0, 2), "/", f.sha256);
}

// Streams the file through SHA-256, reporting bytes as it goes.
absl::StatusOr<std::string> HashFile(const std::string& path, int64_t* done, int64_t total,
                                     const std::function<void(int64_t, int64_t)>& progress) {
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  Sha256 sha;
  std::string buf(1 << 20, '\0');
  for (;;) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize n = in.gcount();
    if (in.bad()) return absl::DataLossError(absl::StrCat("error reading ", path));
    if (n <= 0) break;
    sha.Update(buf.data(), static_cast<size_t>(n));
    *done += n;
    if (progress) progress(*done, total);
  }
  return sha.FinishHex();
}

}  // namespace

int64_t BackupManifest::total_bytes() const {
  int64_t total = 0;
  for (const storage::BackupFile& f : files) total += f.size_bytes;
  return total;
}

std::string BackupManifest::ToJson() const {
  json j;
  j["format"] = kBackupFormat;
  j["format_version"] = format_version;
  j["created_at"] = absl::FormatTime("%Y-%m-%d%ET%H:%M:%SZ", absl::FromUnixMicros(created_at_us),
                                     absl::UTCTimeZone());
  j["created_at_us"] = created_at_us;
  j["server_version"] = server_version;
  j["schema_version"] = schema_version;
  j["backbone"] = {{"name", backbone_name}, {"sha256", backbone_sha256}};
  j["counts"] = {{"tenants", counts.tenants},   {"api_keys", counts.api_keys},
                 {"datasets", counts.datasets}, {"jobs", counts.jobs},
                 {"jobs_unfinished", counts.jobs_unfinished}, {"versions", counts.versions}};
  json files_json = json::array();
  for (const storage::BackupFile& f : files) {
    files_json.push_back({{"path", f.path}, {"size_bytes", f.size_bytes}, {"sha256", f.sha256}});
  }
  j["files"] = std::move(files_json);
  j["total_bytes"] = total_bytes();
  return j.dump(2) + "\n";
}

absl::StatusOr<BackupManifest> BackupManifest::FromJson(std::string_view text, std::string_view source) {
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(source), ": ", what));
  };
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  BackupManifest m;
  try {
    if (j.value("format", std::string()) != kBackupFormat) {
      return bad(absl::StrCat("\"format\" is not \"", kBackupFormat, "\": not a Tessera backup manifest"));
    }
    if (!j.contains("format_version") || !j["format_version"].is_number_integer()) {
      return bad("\"format_version\" is missing or not an integer");
    }
    m.format_version = j["format_version"].get<int>();
    if (m.format_version != kBackupFormatVersion) {
      return bad(absl::StrCat("format_version ", m.format_version, " is not supported (this build reads ",
                              kBackupFormatVersion, ")"));
    }
    for (const char* field : {"schema_version", "created_at_us"}) {
      if (!j.contains(field) || !j[field].is_number_integer()) {
        return bad(absl::StrCat("\"", field, "\" is missing or not an integer"));
      }
    }
    m.schema_version = j["schema_version"].get<int>();
    m.created_at_us = j["created_at_us"].get<int64_t>();
    m.server_version = j.value("server_version", std::string());
    if (!j.contains("backbone") || !j["backbone"].is_object() || !j["backbone"].contains("sha256") ||
        !j["backbone"]["sha256"].is_string()) {
      return bad("\"backbone.sha256\" is missing");
    }
    m.backbone_sha256 = j["backbone"]["sha256"].get<std::string>();
    m.backbone_name = j["backbone"].value("name", std::string());
    if (j.contains("counts") && j["counts"].is_object()) {
      const json& c = j["counts"];
      m.counts.tenants = c.value("tenants", int64_t{0});
      m.counts.api_keys = c.value("api_keys", int64_t{0});
      m.counts.datasets = c.value("datasets", int64_t{0});
      m.counts.jobs = c.value("jobs", int64_t{0});
      m.counts.jobs_unfinished = c.value("jobs_unfinished", int64_t{0});
      m.counts.versions = c.value("versions", int64_t{0});
    }
    if (!j.contains("files") || !j["files"].is_array()) return bad("\"files\" is missing or not an array");
    std::set<std::string> seen;
    int registries = 0;
    for (size_t i = 0; i < j["files"].size(); ++i) {
      const json& f = j["files"][i];
      const std::string where = absl::StrCat("files[", i, "]");
      if (!f.is_object() || !f.contains("path") || !f["path"].is_string() || !f.contains("sha256") ||
          !f["sha256"].is_string() || !f.contains("size_bytes") || !f["size_bytes"].is_number_integer()) {
        return bad(absl::StrCat(where, " needs \"path\", \"sha256\" (strings) and \"size_bytes\" (integer)"));
      }
      storage::BackupFile file;
      file.path = f["path"].get<std::string>();
      file.sha256 = f["sha256"].get<std::string>();
      file.size_bytes = f["size_bytes"].get<int64_t>();
      if (file.size_bytes < 0) return bad(absl::StrCat(where, ".size_bytes is negative"));
      if (!storage::BlobStore::IsValidDigest(file.sha256)) {
        return bad(absl::StrCat(where, ".sha256 is not 64 lowercase hex characters"));
      }
      if (!ValidFilePath(file)) {
        return bad(absl::StrCat(where, ".path \"", file.path, "\" is neither ", storage::kBackupRegistryFile,
                                " nor blobs/<2 hex>/<its sha256>"));
      }
      if (!seen.insert(file.path).second) return bad(absl::StrCat(where, ".path \"", file.path, "\" is listed twice"));
      if (file.path == storage::kBackupRegistryFile) ++registries;
      m.files.push_back(std::move(file));
    }
    if (registries != 1) return bad(absl::StrCat("\"files\" must list ", storage::kBackupRegistryFile, " once"));
  } catch (const json::exception& e) {
    return bad(absl::StrCat("malformed: ", e.what()));
  }
  return m;
}

absl::StatusOr<BackupManifest> VerifyBackupDir(const std::string& dir,
                                               const std::function<void(int64_t, int64_t)>& progress) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("backup directory ", dir, " does not exist"));
  }
  const std::string manifest_path = absl::StrCat(dir, "/", kBackupManifestFile);
  std::ifstream in(manifest_path, std::ios::binary);
  if (!in.is_open()) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir, " has no ", kBackupManifestFile, ": not a backup written by tessera-admin backup"));
  }
  std::stringstream text;
  text << in.rdbuf();
  ASSIGN_OR_RETURN(BackupManifest m, BackupManifest::FromJson(text.str(), manifest_path));

  // Exactly the listed files (and the manifest), nothing else.
  std::set<std::string> listed;
  for (const storage::BackupFile& f : m.files) listed.insert(f.path);
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_directory()) continue;
    const std::string rel = fs::relative(it->path(), dir, ec).generic_string();
    if (rel != kBackupManifestFile && listed.count(rel) == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("manifest mismatch: ", dir, "/", rel, " is not listed in ", kBackupManifestFile));
    }
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", dir, ": ", ec.message()));

  const int64_t total = m.total_bytes();
  int64_t done = 0;
  for (const storage::BackupFile& f : m.files) {
    const std::string path = absl::StrCat(dir, "/", f.path);
    if (!fs::is_regular_file(path, ec)) {
      return absl::FailedPreconditionError(
          absl::StrCat("manifest mismatch: ", f.path, " is listed in ", kBackupManifestFile, " but missing from ", dir));
    }
    const int64_t size = static_cast<int64_t>(fs::file_size(path, ec));
    if (ec || size != f.size_bytes) {
      return absl::DataLossError(absl::StrCat("manifest mismatch: ", f.path, " has ", size, " bytes, the manifest says ",
                                              f.size_bytes));
    }
    ASSIGN_OR_RETURN(std::string sha, HashFile(path, &done, total, progress));
    if (sha != f.sha256) {
      return absl::DataLossError(absl::StrCat("manifest mismatch: ", f.path, " has sha256 ", sha,
                                              ", the manifest says ", f.sha256));
    }
  }

  // The registry copy agrees with the manifest and finds every blob it needs.
  ASSIGN_OR_RETURN(storage::RegistryFileInfo info,
                   storage::InspectRegistryFile(absl::StrCat(dir, "/", storage::kBackupRegistryFile)));
  if (info.schema_version != m.schema_version) {
    return absl::FailedPreconditionError(absl::StrCat("manifest mismatch: ", storage::kBackupRegistryFile,
                                                      " is at schema version ", info.schema_version,
                                                      ", the manifest says ", m.schema_version));
  }
  for (const std::string& digest : info.referenced_blobs) {
    if (listed.count(absl::StrCat("blobs/", digest.substr(0, 2), "/", digest)) == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "manifest mismatch: the registry references blob ", digest, ", which the backup does not hold"));
    }
  }
  return m;
}

}  // namespace tessera::services
