// VersionExporter: what Experts.ExportVersion needs to turn a tenant's version into files. The server
// owns one (CheckpointExporter, services/checkpoint_exporter.h, over core/); the handler streams the
// files it wrote (StreamExportedFiles) and drops them.
//
// An export is written completely into a private directory first (so a failure never streams half a
// checkpoint) and streamed from disk, chunk by chunk, so memory stays at one chunk whatever the size.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tessera/v1/experts.pb.h"

namespace tessera::services {

struct ExportRequest {
  std::string tenant_id;
  int64_t version = 0;        // 0 = the base checkpoint (not with overlay_only)
  bool overlay_only = false;
  int64_t max_shard_bytes = 0;  // 0 = the exporter's default
};

// A directory of exported files; removed (recursively) with this object.
class ExportDir {
 public:
  // A fresh empty directory under `parent` (created if missing), named export-XXXXXX.
  static absl::StatusOr<std::unique_ptr<ExportDir>> Create(const std::string& parent);
  ~ExportDir();
  ExportDir(const ExportDir&) = delete;
  ExportDir& operator=(const ExportDir&) = delete;

  const std::string& path() const { return path_; }
  std::vector<std::string> files;  // relative paths, in the order they are streamed
  // Run after the directory is removed (an exporter's concurrency slot).
  std::function<void()> on_release;

 private:
  explicit ExportDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

class VersionExporter {
 public:
  virtual ~VersionExporter() = default;
  // Tenant scoping is the caller's (authorization); an unknown tenant or version is NOT_FOUND.
  virtual absl::StatusOr<std::unique_ptr<ExportDir>> Export(const ExportRequest& request) = 0;
};

// Sends every file of `dir` as ExportChunks of at most `chunk_bytes` (see experts.proto), hashing
// as it reads, then the final listing. `write` returns false when the client is gone (-> CANCELLED).
absl::Status StreamExportedFiles(const ExportDir& dir, int64_t chunk_bytes,
                                 const std::function<bool(const v1::ExportChunk&)>& write);

}  // namespace tessera::services
