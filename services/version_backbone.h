// Which backbone a version was trained on, and the rule that a version runs only on that backbone.
//
// A version's overlay holds trained copies of a few experts; on any other backbone (other weights,
// even of the same shape) its experts see inputs they were never trained on, so answers would be
// silently wrong. So promoting, rolling back to, pinning (Generate/Score with `version`), serving and
// exporting (merged) a version trained on another backbone is FAILED_PRECONDITION naming both digests.
//
// The digest of a version: the registry's `backbone_sha256` (recorded at publish since migration 3);
// for rows published before that, the `backbone_sha256` entry of its overlay blob's safetensors
// metadata (every Tessera trainer wrote it there: core/train/artifact.h). A digest that is still
// unknown (empty: a version written without one, or a server whose backbone has no digest, such as
// random:tiny) is not checked: nothing can be proven, and refusing would strand such versions.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/registry.h"

namespace tessera::services {

// The backbone digest `v` was trained on ("" = unknown). Reads the blob's header only for rows
// without the column (DATA_LOSS / NOT_FOUND from the blob store pass through).
absl::StatusOr<std::string> VersionBackboneSha256(storage::Registry& registry, const storage::ExpertVersion& v);

// OK when the digests match or either is unknown; else FAILED_PRECONDITION naming the tenant, the
// version and both digests.
absl::Status CheckSameBackbone(const storage::ExpertVersion& v, const std::string& version_sha256,
                               const std::string& server_sha256);

// VersionBackboneSha256 + CheckSameBackbone for the tenant's `version` (>= 1; 0 = the base: OK).
absl::Status CheckVersionBackbone(storage::Registry& registry, const std::string& tenant_id, int64_t version,
                                  const std::string& server_sha256);

}  // namespace tessera::services
