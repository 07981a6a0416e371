// VersionSource: where the runtime gets tenants' live pointers and expert-version weights.
//
// core/ cannot see the registry (no SQLite here), so the server implements this interface over its
// registry and blob store; tests implement it over an in-memory map. Implementations must be
// thread-safe: the runtime calls them from request threads and from SetLive concurrently, and never
// while holding one of its own locks, so they may block (disk, network).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace tessera::runtime {

struct VersionBlob {
  std::string safetensors_bytes;  // the overlay's safetensors file (ExpertOverlay::Serialize layout)
  // Content digest of the bytes (the registry's blob sha256). The runtime uses it as the overlay's
  // identity in every cache; it trusts the source to have verified it (the blob store does on read).
  std::string sha256;
};

class VersionSource {
 public:
  virtual ~VersionSource() = default;

  // The tenant's live version in the registry (0 = base experts). NOT_FOUND for an unknown tenant.
  // Used only for a tenant the runtime has not been told about yet (SetLive is the normal path).
  virtual absl::StatusOr<int64_t> LiveVersion(const std::string& tenant) = 0;

  // The weights of version >= 1. NOT_FOUND when the tenant has no such version; the runtime passes
  // errors through unchanged.
  virtual absl::StatusOr<VersionBlob> LoadVersion(const std::string& tenant, int64_t version) = 0;
};

}  // namespace tessera::runtime
