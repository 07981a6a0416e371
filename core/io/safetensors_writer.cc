// Safetensors serialization. Output is a pure function of the inputs: tensors are laid out in name
// order and the header is nlohmann's (key-sorted) compact dump, padded with spaces to 8 bytes.
#include <algorithm>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "core/io/file_util.h"
#include "core/io/safetensors.h"
#include "nlohmann/json.hpp"

namespace tessera::io {

absl::StatusOr<std::string> SerializeSafetensors(
    absl::Span<const HostTensor> tensors, const std::map<std::string, std::string>& metadata) {
  std::vector<const HostTensor*> sorted;
  sorted.reserve(tensors.size());
  for (const HostTensor& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(),
            [](const HostTensor* a, const HostTensor* b) { return a->name < b->name; });

  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) {
    nlohmann::json meta = nlohmann::json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  std::vector<size_t> sizes;
  sizes.reserve(sorted.size());
  size_t offset = 0;
  for (size_t i = 0; i < sorted.size(); ++i) {
    const HostTensor& t = *sorted[i];
    if (t.name.empty()) return absl::InvalidArgumentError("tensor with an empty name");
    if (t.name == "__metadata__") {
      return absl::InvalidArgumentError("tensor name '__metadata__' is reserved");
    }
    if (i > 0 && sorted[i - 1]->name == t.name) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' given more than once"));
    }
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", t.name, "': negative dim in shape ", ShapeString(t.shape)));
      }
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel)) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", t.name, "': shape ", ShapeString(t.shape), " overflows"));
      }
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, DTypeSize(t.dtype), &nbytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", t.name, "': shape ", ShapeString(t.shape), " overflows"));
    }
    if (nbytes > 0 && t.data == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "': data is null"));
    }
    header[t.name] = {{"dtype", SafetensorsDTypeName(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + nbytes}}};
    sizes.push_back(static_cast<size_t>(nbytes));
    offset += nbytes;
  }

  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  const uint64_t header_len = header_text.size();

  std::string out;
  out.resize(8 + header_text.size() + offset);
  std::memcpy(out.data(), &header_len, 8);  // little-endian host (asserted in the reader)
  std::memcpy(out.data() + 8, header_text.data(), header_text.size());
  char* data = out.data() + 8 + header_text.size();
  for (size_t i = 0; i < sorted.size(); ++i) {
    if (sizes[i] > 0) std::memcpy(data, sorted[i]->data, sizes[i]);
    data += sizes[i];
  }
  return out;
}

absl::Status WriteSafetensorsFile(const std::string& path, absl::Span<const HostTensor> tensors,
                                  const std::map<std::string, std::string>& metadata) {
  absl::StatusOr<std::string> bytes = SerializeSafetensors(tensors, metadata);
  if (!bytes.ok()) {
    return absl::Status(bytes.status().code(),
                        absl::StrCat("writing '", path, "': ", bytes.status().message()));
  }
  return WriteFileAtomically(path, *bytes);
}

}  // namespace tessera::io
