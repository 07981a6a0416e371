// Checkpoint: read access to an HF model's weights, whether one file or a sharded set.
//
// Open(path) accepts:
//   - a directory holding `model.safetensors.index.json` (sharded: its "weight_map" maps tensor name ->
//     shard file in the same directory), or else `model.safetensors`;
//   - a `*.safetensors` file (single);
//   - a `*.index.json` file (sharded, shards beside it).
// Every shard is opened and validated up front; every name in the weight map must exist in its shard.
// Errors name the tensor and the shard; a missing shard file is NOT_FOUND.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/io/safetensors.h"

namespace tessera::io {

class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& path);

  std::vector<std::string> names() const;  // sorted, across all shards
  const TensorInfo* Find(std::string_view name) const;
  // The shard file holding `name` ("" when absent).
  std::string ShardOf(std::string_view name) const;
  // For a single file: its "__metadata__"; for a sharded set: the index's "metadata" values that
  // are strings (e.g. total_size is rendered as a decimal string).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  size_t num_shards() const { return shards_.size(); }

  absl::StatusOr<std::vector<float>> ReadF32(std::string_view name) const;
  absl::Status ReadF32Into(std::string_view name, const std::vector<int64_t>& expected_shape,
                           float* dst) const;
  absl::StatusOr<absl::Span<const uint8_t>> RawBytes(std::string_view name) const;
  // SafetensorsFile::ReadAs on the shard holding `name` (NOT_FOUND naming the tensor and the
  // checkpoint, and for a sharded one its index, when absent).
  absl::Status ReadAs(std::string_view name, const std::vector<int64_t>& expected_shape, DType dtype,
                      size_t piece_bytes, const SafetensorsFile::PieceSink& sink) const;
  // Every file holding tensors, sorted (one for a single file).
  std::vector<std::string> shard_paths() const;
  // The index file of a sharded checkpoint ("" for a single file).
  const std::string& index_path() const { return index_path_; }

 private:
  Checkpoint() = default;
  // NOT_FOUND naming `name` and the checkpoint when absent.
  absl::StatusOr<const SafetensorsFile*> ShardFor(std::string_view name) const;

  std::string path_;
  std::string index_path_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::map<std::string, const SafetensorsFile*, std::less<>> by_name_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace tessera::io
