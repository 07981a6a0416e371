#include "services/version_backbone.h"

#include <cstdint>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace tessera::services {
namespace {

// The "__metadata__" entry `key` of a safetensors file (8-byte little-endian header length, then the
// JSON header), reading only the header. "" when absent. (The services layer stays free of core/.)
absl::StatusOr<std::string> SafetensorsMetadataValue(const std::string& path, const std::string& key) {
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) return absl::NotFoundError(absl::StrCat("blob ", path, " is missing"));
  uint8_t len_bytes[8];
  if (!in.read(reinterpret_cast<char*>(len_bytes), 8)) {
    return absl::DataLossError(absl::StrCat(path, ": shorter than a safetensors header"));
  }
  uint64_t len = 0;
  for (int i = 7; i >= 0; --i) len = (len << 8) | len_bytes[i];
  if (len > (uint64_t{100} << 20)) {
    return absl::DataLossError(absl::StrCat(path, ": safetensors header length ", len, " is implausible"));
  }
  std::string header(len, '\0');
  if (!in.read(header.data(), static_cast<std::streamsize>(len))) {
    return absl::DataLossError(absl::StrCat(path, ": truncated safetensors header"));
  }
  nlohmann::json j = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::DataLossError(absl::StrCat(path, ": safetensors header is not a JSON object"));
  }
  auto meta = j.find("__metadata__");
  if (meta == j.end() || !meta->is_object()) return std::string();
  auto it = meta->find(key);
  if (it == meta->end() || !it->is_string()) return std::string();
  return it->get<std::string>();
}

}  // namespace

absl::StatusOr<std::string> VersionBackboneSha256(storage::Registry& registry, const storage::ExpertVersion& v) {
  if (!v.backbone_sha256.empty()) return v.backbone_sha256;
  absl::StatusOr<std::string> path = registry.blobs().Path(v.sha256);
  if (!path.ok()) return path.status();
  absl::StatusOr<std::string> sha = SafetensorsMetadataValue(*path, "backbone_sha256");
  if (!sha.ok()) {
    return absl::Status(sha.status().code(), absl::StrCat("version ", v.version, " of tenant ", v.tenant_id,
                                                          ": ", sha.status().message()));
  }
  return sha;
}

absl::Status CheckSameBackbone(const storage::ExpertVersion& v, const std::string& version_sha256,
                               const std::string& server_sha256) {
  if (version_sha256.empty() || server_sha256.empty() || version_sha256 == server_sha256) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "version ", v.version, " of tenant ", v.tenant_id, " was trained on backbone sha256 ", version_sha256,
      ", but this server's backbone has sha256 ", server_sha256,
      ": it can only run on the backbone it was trained on (serve that backbone, or fine-tune a new "
      "version on this one)"));
}

absl::Status CheckVersionBackbone(storage::Registry& registry, const std::string& tenant_id, int64_t version,
                                  const std::string& server_sha256) {
  if (version == 0 || server_sha256.empty()) return absl::OkStatus();
  absl::StatusOr<storage::ExpertVersion> v = registry.GetVersion(tenant_id, version);
  if (!v.ok()) return v.status();
  absl::StatusOr<std::string> sha = VersionBackboneSha256(registry, *v);
  if (!sha.ok()) return sha.status();
  return CheckSameBackbone(*v, *sha, server_sha256);
}

}  // namespace tessera::services
