// Safetensors reading and writing (the Hugging Face checkpoint format).
//
// File layout: 8-byte little-endian header length N, then N bytes of JSON header, then the data
// section. The header is a JSON object mapping tensor name -> {"dtype","shape","data_offsets":[b,e]}
// (offsets relative to the data section) plus an optional "__metadata__" string->string map.
//
// Reader contract: Open() maps the file read-only and validates the whole header before returning, so
// every later accessor works on checked offsets and never reads outside the mapping. Any malformed
// input (truncation, bad JSON, unknown dtype, bad shape, offsets out of range or overlapping, size not
// numel * dtype size, duplicate names) is a non-OK Status naming the file and tensor, never a crash.
// Supported dtypes: F32, F16, BF16, I32. Reads convert F16/BF16 to F32 on the host; the mapping is
// shared by all accessors and lives as long as the SafetensorsFile.
//
// Streaming reads (ReadAs) are how whole models are loaded: a tensor is handed out in pieces of
// bounded size, converted to the caller's dtype (or pointing straight into the mapping when the dtype
// already matches), and the mapped pages of each piece are dropped from the process (MADV_DONTNEED)
// once the caller has copied it. Mapped file pages count toward the process's RSS while resident, so
// without this a load would peak at weights + file; with it the peak is weights + one piece.
//
// Writer contract: deterministic output (tensors sorted by name, header padded with spaces to a
// multiple of 8 bytes as HF does, so the data section is 8-byte aligned).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/tensor/tensor.h"

namespace tessera::io {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  size_t offset = 0;  // byte offset within the data section (HF "data_offsets"[0])
  size_t nbytes = 0;  // data_offsets[1] - data_offsets[0] == numel * DTypeSize(dtype)

  int64_t numel() const;
};

// "F32", "F16", "BF16", "I32" <-> DType.
absl::StatusOr<DType> DTypeFromSafetensorsName(std::string_view name);
const char* SafetensorsDTypeName(DType dtype);

class SafetensorsFile {
 public:
  // Maps `path` read-only and validates its header. NOT_FOUND if the file does not exist,
  // DATA_LOSS / INVALID_ARGUMENT for a malformed file (message names the file and the tensor).
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Same validation over an in-memory blob (which the object keeps). `label` names it in errors.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBytes(std::string bytes,
                                                                    std::string label = "<memory>");

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::vector<std::string> names() const;  // sorted
  size_t size() const { return tensors_.size(); }
  // nullptr when absent.
  const TensorInfo* Find(std::string_view name) const;

  // The tensor converted to F32 (F16/BF16 widened). NOT_FOUND if absent; INVALID_ARGUMENT for I32.
  absl::StatusOr<std::vector<float>> ReadF32(std::string_view name) const;
  // Like ReadF32 into `dst` (numel floats), after checking the shape equals `expected_shape`
  // (INVALID_ARGUMENT naming the tensor and both shapes).
  absl::Status ReadF32Into(std::string_view name, const std::vector<int64_t>& expected_shape,
                           float* dst) const;
  // The tensor's stored bytes (little-endian, any dtype). Not necessarily aligned.
  absl::StatusOr<absl::Span<const uint8_t>> RawBytes(std::string_view name) const;

  // Receives consecutive pieces of a tensor: `count` elements starting at element `first`, in the
  // dtype asked for. `data` is valid only during the call (it may point into the mapping).
  using PieceSink = std::function<absl::Status(const void* data, int64_t first, int64_t count)>;
  // Hands tensor `name` to `sink` in order, converted to `dtype` (F32, BF16 or F16; narrowing rounds
  // to nearest even), in pieces of at most `piece_bytes` output bytes (at least one element each),
  // after checking its shape equals `expected_shape`. Pages of the mapping a piece came from are
  // released after the sink returns (see the file comment). Errors: NOT_FOUND (absent), INVALID_ARGUMENT
  // (shape, or an I32 tensor / non-float `dtype`), each naming the tensor and file; a sink error is
  // returned as is.
  absl::Status ReadAs(std::string_view name, const std::vector<int64_t>& expected_shape, DType dtype,
                      size_t piece_bytes, const PieceSink& sink) const;

 private:
  SafetensorsFile() = default;
  absl::Status Parse();  // validates the header over [base_, base_ + size_)
  // Drops the whole pages inside [p, p + n) of the mapping from this process (no-op for FromBytes).
  void ReleasePages(const uint8_t* p, size_t n) const;

  std::string path_;
  std::string owned_bytes_;        // FromBytes
  void* map_addr_ = nullptr;       // Open (mmap)
  size_t map_len_ = 0;
  const uint8_t* base_ = nullptr;  // whole file
  size_t size_ = 0;
  const uint8_t* data_ = nullptr;  // data section
  size_t data_size_ = 0;
  std::map<std::string, TensorInfo, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Converts `count` elements of `dtype` at `src` (unaligned OK) to F32. INVALID_ARGUMENT for I32.
absl::Status ConvertToF32(DType dtype, const uint8_t* src, size_t count, float* dst);
// Converts `count` elements between float dtypes (F32, BF16, F16; `src` unaligned OK, `dst` aligned for
// `dst_dtype`). Narrowing rounds to nearest even (as Backend::Copy does); F16 <-> BF16 goes through F32,
// which is exact for the widening half. INVALID_ARGUMENT when either dtype is I32.
absl::Status ConvertFloat(DType src_dtype, const uint8_t* src, size_t count, DType dst_dtype, void* dst);

// ---- Writing ------------------------------------------------------------------------------------

struct HostTensor {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // numel * DTypeSize(dtype) bytes, host memory, little-endian
};

// Serializes `tensors` (sorted by name in the output) with `metadata` as "__metadata__" (omitted when
// empty). INVALID_ARGUMENT on an empty/duplicate/reserved name, a negative dim, or null data.
absl::StatusOr<std::string> SerializeSafetensors(
    absl::Span<const HostTensor> tensors, const std::map<std::string, std::string>& metadata = {});

// SerializeSafetensors, then WriteFileAtomically (temp file in the same dir, fsync, rename, fsync dir).
absl::Status WriteSafetensorsFile(const std::string& path, absl::Span<const HostTensor> tensors,
                                  const std::map<std::string, std::string>& metadata = {});

}  // namespace tessera::io
