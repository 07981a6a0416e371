// SafetensorsFile: header validation and typed reads. See safetensors.h for the contract.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/io/safetensors.h"
#include "nlohmann/json.hpp"

namespace tessera::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts would need byte swapping");

namespace {

using json = nlohmann::json;

// HF's reference implementation refuses headers above 100 MB; so do we, before allocating anything.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

// Multiplies with overflow detection (all operands non-negative).
bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

// Reads a JSON number as a non-negative integer; false for floats, negatives, non-numbers.
bool AsNonNegativeInt(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer()) {
    int64_t s = v.get<int64_t>();
    if (s < 0) return false;
    *out = static_cast<uint64_t>(s);
    return true;
  }
  return false;
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<DType> DTypeFromSafetensorsName(std::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  if (name == "I32") return DType::kI32;
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported safetensors dtype '", std::string(name), "' (supported: F32, F16, BF16, I32)"));
}

const char* SafetensorsDTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI32: return "I32";
  }
  return "?";
}

absl::Status ConvertToF32(DType dtype, const uint8_t* src, size_t count, float* dst) {
  if (count == 0 && dtype != DType::kI32) return absl::OkStatus();  // dst may be null
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, count * sizeof(float));
      return absl::OkStatus();
    case DType::kBF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t v;
        std::memcpy(&v, src + 2 * i, 2);
        dst[i] = Bf16ToF32(v);
      }
      return absl::OkStatus();
    case DType::kF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t v;
        std::memcpy(&v, src + 2 * i, 2);
        dst[i] = F16ToF32(v);
      }
      return absl::OkStatus();
    case DType::kI32:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("cannot read a ", SafetensorsDTypeName(dtype), " tensor as floating point"));
}

absl::Status ConvertFloat(DType src_dtype, const uint8_t* src, size_t count, DType dst_dtype, void* dst) {
  if (src_dtype == DType::kI32 || dst_dtype == DType::kI32) {
    return absl::InvalidArgumentError(absl::StrCat("cannot convert ", SafetensorsDTypeName(src_dtype), " to ",
                                                   SafetensorsDTypeName(dst_dtype), ": not both floating point"));
  }
  if (count == 0) return absl::OkStatus();
  if (src_dtype == dst_dtype) {
    std::memcpy(dst, src, count * DTypeSize(src_dtype));
    return absl::OkStatus();
  }
  if (dst_dtype == DType::kF32) return ConvertToF32(src_dtype, src, count, static_cast<float*>(dst));
  // Narrowing to 16 bits: widen each element to f32 (exact), then round once.
  uint16_t* out = static_cast<uint16_t*>(dst);
  const bool to_bf16 = dst_dtype == DType::kBF16;
  for (size_t i = 0; i < count; ++i) {
    float f;
    if (src_dtype == DType::kF32) {
      std::memcpy(&f, src + 4 * i, 4);
    } else {
      uint16_t v;
      std::memcpy(&v, src + 2 * i, 2);
      f = src_dtype == DType::kBF16 ? Bf16ToF32(v) : F16ToF32(v);
    }
    out[i] = to_bf16 ? F32ToBf16(f) : F32ToF16(f);
  }
  return absl::OkStatus();
}

SafetensorsFile::~SafetensorsFile() {
  if (map_addr_ != nullptr) ::munmap(map_addr_, map_len_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    std::string msg = absl::StrCat("cannot open safetensors file '", path, "': ", std::strerror(errno));
    return errno == ENOENT ? absl::NotFoundError(msg) : absl::FailedPreconditionError(msg);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not a regular file"));
  }
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  file->path_ = path;
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ > 0) {
    void* addr = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      return absl::InternalError(absl::StrCat("mmap of '", path, "' failed: ", std::strerror(err)));
    }
    file->map_addr_ = addr;
    file->map_len_ = file->size_;
    file->base_ = static_cast<const uint8_t*>(addr);
  }
  ::close(fd);  // the mapping stays valid
  if (absl::Status s = file->Parse(); !s.ok()) return s;
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBytes(std::string bytes,
                                                                            std::string label) {
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  file->path_ = std::move(label);
  file->owned_bytes_ = std::move(bytes);
  file->base_ = reinterpret_cast<const uint8_t*>(file->owned_bytes_.data());
  file->size_ = file->owned_bytes_.size();
  if (absl::Status s = file->Parse(); !s.ok()) return s;
  return file;
}

absl::Status SafetensorsFile::Parse() {
  const std::string where = absl::StrCat("safetensors '", path_, "'");
  if (size_ < 8) {
    return absl::DataLossError(
        absl::StrCat(where, ": file is ", size_, " bytes, too short for the 8-byte header length"));
  }
  uint64_t header_len;
  std::memcpy(&header_len, base_, 8);
  if (header_len > size_ - 8) {
    return absl::DataLossError(absl::StrCat(where, ": header length ", header_len,
                                            " runs past the end of the file (", size_, " bytes)"));
  }
  if (header_len > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": header length ", header_len, " exceeds the 100 MB limit"));
  }
  data_ = base_ + 8 + header_len;
  data_size_ = size_ - 8 - header_len;

  // Duplicate top-level keys are silently merged by JSON parsers; a checkpoint with two entries for
  // one name is ambiguous, so catch them during parsing.
  std::string duplicate;
  std::set<std::string> seen;
  json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json header;
  try {
    const char* text = reinterpret_cast<const char*>(base_ + 8);
    header = json::parse(text, text + header_len, on_event, /*allow_exceptions=*/false);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": header is not valid JSON: ", e.what()));
  }
  if (header.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": header is not valid JSON"));
  }
  if (!header.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": header is JSON ", header.type_name(), ", expected an object"));
  }
  if (!duplicate.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": header names '", duplicate, "' more than once"));
  }

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": __metadata__ must be an object of strings"));
      }
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(where, ": __metadata__ value for '", m.key(),
                                                         "' is ", m.value().type_name(),
                                                         ", expected a string"));
        }
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string tw = absl::StrCat(where, ": tensor '", name, "'");
    if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": empty tensor name"));
    if (!entry.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(tw, ": entry is ", entry.type_name(), ", expected an object"));
    }
    auto dt = entry.find("dtype");
    if (dt == entry.end() || !dt->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(tw, ": missing or non-string \"dtype\""));
    }
    absl::StatusOr<DType> dtype = DTypeFromSafetensorsName(dt->get<std::string>());
    if (!dtype.ok()) return absl::InvalidArgumentError(absl::StrCat(tw, ": ", dtype.status().message()));

    auto sh = entry.find("shape");
    if (sh == entry.end() || !sh->is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(tw, ": missing or non-array \"shape\""));
    }
    TensorInfo info;
    info.name = name;
    info.dtype = *dtype;
    uint64_t numel = 1;
    for (const json& d : *sh) {
      uint64_t v;
      if (!AsNonNegativeInt(d, &v) || v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return absl::InvalidArgumentError(
            absl::StrCat(tw, ": shape entry ", d.dump(), " is not a non-negative integer"));
      }
      if (MulOverflows(numel, v, &numel)) {
        return absl::InvalidArgumentError(absl::StrCat(tw, ": shape ", sh->dump(), " overflows"));
      }
      info.shape.push_back(static_cast<int64_t>(v));
    }
    uint64_t expected_bytes;
    if (MulOverflows(numel, DTypeSize(info.dtype), &expected_bytes)) {
      return absl::InvalidArgumentError(absl::StrCat(tw, ": shape ", sh->dump(), " overflows"));
    }

    auto off = entry.find("data_offsets");
    uint64_t begin = 0, end = 0;
    if (off == entry.end() || !off->is_array() || off->size() != 2 ||
        !AsNonNegativeInt((*off)[0], &begin) || !AsNonNegativeInt((*off)[1], &end)) {
      return absl::InvalidArgumentError(absl::StrCat(
          tw, ": \"data_offsets\" must be [begin, end] of non-negative integers"));
    }
    if (begin > end) {
      return absl::InvalidArgumentError(
          absl::StrCat(tw, ": data_offsets begin ", begin, " > end ", end));
    }
    if (end > data_size_) {
      return absl::DataLossError(absl::StrCat(tw, ": data_offsets [", begin, ", ", end,
                                              "] run past the data section (", data_size_,
                                              " bytes); file truncated?"));
    }
    if (end - begin != expected_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          tw, ": holds ", end - begin, " bytes but ", SafetensorsDTypeName(info.dtype),
          ShapeString(info.shape), " needs ", expected_bytes));
    }
    info.offset = static_cast<size_t>(begin);
    info.nbytes = static_cast<size_t>(end - begin);
    tensors_.emplace(name, std::move(info));
  }

  // Overlap check: sorted by start, each non-empty tensor must begin at or after the previous end.
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const auto& [name, info] : tensors_) {
    if (info.nbytes > 0) by_offset.push_back(&info);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->offset < b->offset;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo* prev = by_offset[i - 1];
    const TensorInfo* cur = by_offset[i];
    if (cur->offset < prev->offset + prev->nbytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": tensors '", prev->name, "' [", prev->offset, ", ", prev->offset + prev->nbytes,
          ") and '", cur->name, "' [", cur->offset, ", ", cur->offset + cur->nbytes, ") overlap"));
    }
  }
  return absl::OkStatus();
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [name, info] : tensors_) out.push_back(name);
  return out;
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::StatusOr<absl::Span<const uint8_t>> SafetensorsFile::RawBytes(std::string_view name) const {
  const TensorInfo* info = Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrCat("tensor '", std::string(name), "' not found in '", path_, "'"));
  }
  return absl::Span<const uint8_t>(data_ + info->offset, info->nbytes);
}

void SafetensorsFile::ReleasePages(const uint8_t* p, size_t n) const {
  if (map_addr_ == nullptr || n == 0) return;
  static const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const uint8_t* map = static_cast<const uint8_t*>(map_addr_);
  // Outward to whole pages: a page shared with a neighbouring tensor is refaulted from the page cache
  // if that tensor is read later (the mapping is read-only, so nothing can be lost).
  size_t begin = static_cast<size_t>(p - map) / page * page;
  size_t end = std::min(map_len_, (static_cast<size_t>(p - map) + n + page - 1) / page * page);
  if (end > begin) ::madvise(const_cast<uint8_t*>(map) + begin, end - begin, MADV_DONTNEED);
}

absl::Status SafetensorsFile::ReadAs(std::string_view name, const std::vector<int64_t>& expected_shape,
                                     DType dtype, size_t piece_bytes, const PieceSink& sink) const {
  const TensorInfo* info = Find(name);
  const std::string where = absl::StrCat("tensor '", std::string(name), "' in '", path_, "'");
  if (info == nullptr) return absl::NotFoundError(absl::StrCat(where, ": not found"));
  if (info->shape != expected_shape) {
    return absl::InvalidArgumentError(absl::StrCat(where, " has shape ", ShapeString(info->shape), ", expected ",
                                                   ShapeString(expected_shape)));
  }
  if (info->dtype == DType::kI32 || dtype == DType::kI32) {
    return absl::InvalidArgumentError(absl::StrCat(where, " is ", SafetensorsDTypeName(info->dtype),
                                                   "; cannot read it as ", SafetensorsDTypeName(dtype)));
  }
  const int64_t numel = info->numel();
  const size_t in_size = DTypeSize(info->dtype);
  const size_t out_size = DTypeSize(dtype);
  const int64_t per_piece = std::max<int64_t>(1, static_cast<int64_t>(piece_bytes / out_size));
  const bool convert = info->dtype != dtype;
  std::vector<float> staging;  // float-aligned, reused by every piece
  if (convert) staging.resize((std::min(per_piece, numel) * out_size + sizeof(float) - 1) / sizeof(float));
  const uint8_t* src = data_ + info->offset;
  for (int64_t first = 0; first < numel; first += per_piece) {
    const int64_t count = std::min(per_piece, numel - first);
    const uint8_t* in = src + static_cast<size_t>(first) * in_size;
    const void* out = in;
    if (convert) {
      if (absl::Status s = ConvertFloat(info->dtype, in, static_cast<size_t>(count), dtype, staging.data());
          !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": ", s.message()));
      }
      out = staging.data();
    }
    absl::Status s = sink(out, first, count);
    ReleasePages(in, static_cast<size_t>(count) * in_size);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> SafetensorsFile::ReadF32(std::string_view name) const {
  const TensorInfo* info = Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrCat("tensor '", std::string(name), "' not found in '", path_, "'"));
  }
  std::vector<float> out(static_cast<size_t>(info->numel()));
  if (absl::Status s = ConvertToF32(info->dtype, data_ + info->offset, out.size(), out.data());
      !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", std::string(name), "' in '", path_, "': ", s.message()));
  }
  return out;
}

absl::Status SafetensorsFile::ReadF32Into(std::string_view name,
                                          const std::vector<int64_t>& expected_shape,
                                          float* dst) const {
  const TensorInfo* info = Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrCat("tensor '", std::string(name), "' not found in '", path_, "'"));
  }
  if (info->shape != expected_shape) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", std::string(name), "' in '", path_, "' has shape ",
                                                   ShapeString(info->shape), ", expected ",
                                                   ShapeString(expected_shape)));
  }
  if (absl::Status s = ConvertToF32(info->dtype, data_ + info->offset,
                                    static_cast<size_t>(info->numel()), dst);
      !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", std::string(name), "' in '", path_, "': ", s.message()));
  }
  return absl::OkStatus();
}

}  // namespace tessera::io
