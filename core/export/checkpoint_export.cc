#include "core/export/checkpoint_export.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/io/checkpoint.h"
#include "core/io/file_util.h"
#include "core/io/safetensors.h"
#include "core/model/hf_names.h"
#include "core/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace tessera::exporting {
namespace fs = std::filesystem;
namespace {

// One tensor of the output: its bytes come from the backbone (a span into its mapping) or from
// `owned` (an overlay tensor, f32).
struct OutTensor {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  std::string owned;
};

class FileWriter {
 public:
  static absl::StatusOr<FileWriter> Open(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) return absl::InternalError(absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
    return FileWriter(path, f);
  }
  FileWriter(FileWriter&& o) noexcept : path_(std::move(o.path_)), f_(o.f_) { o.f_ = nullptr; }
  ~FileWriter() {
    if (f_ != nullptr) std::fclose(f_);
  }
  absl::Status Write(const void* data, size_t n) {
    if (n > 0 && std::fwrite(data, 1, n, f_) != n) {
      return absl::InternalError(absl::StrCat("writing ", path_, ": ", std::strerror(errno)));
    }
    return absl::OkStatus();
  }
  absl::Status Close() {
    std::FILE* f = f_;
    f_ = nullptr;
    if (std::fclose(f) != 0) return absl::InternalError(absl::StrCat("closing ", path_, ": ", std::strerror(errno)));
    return absl::OkStatus();
  }

 private:
  FileWriter(std::string path, std::FILE* f) : path_(std::move(path)), f_(f) {}
  std::string path_;
  std::FILE* f_;
};

// One safetensors file from `tensors` (already in output order), streamed.
absl::Status WriteShard(const std::string& path, const std::vector<const OutTensor*>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  nlohmann::json meta = nlohmann::json::object();
  for (const auto& [k, v] : metadata) meta[k] = v;
  header["__metadata__"] = std::move(meta);
  size_t offset = 0;
  for (const OutTensor* t : tensors) {
    header[t->name] = {{"dtype", io::SafetensorsDTypeName(t->dtype)},
                       {"shape", t->shape},
                       {"data_offsets", {offset, offset + t->nbytes}}};
    offset += t->nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data section 8-byte aligned, as HF writes it
  const uint64_t len = text.size();
  ASSIGN_OR_RETURN(FileWriter w, FileWriter::Open(path));
  RETURN_IF_ERROR(w.Write(&len, 8));  // little-endian host (the reader asserts it)
  RETURN_IF_ERROR(w.Write(text.data(), text.size()));
  for (const OutTensor* t : tensors) RETURN_IF_ERROR(w.Write(t->data, t->nbytes));
  return w.Close();
}

absl::Status CopyFile(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) return absl::InternalError(absl::StrCat("copying ", from.string(), " to ", to.string(), ": ", ec.message()));
  return absl::OkStatus();
}

absl::Status WriteText(const fs::path& path, std::string_view text) {
  ASSIGN_OR_RETURN(FileWriter w, FileWriter::Open(path.string()));
  RETURN_IF_ERROR(w.Write(text.data(), text.size()));
  return w.Close();
}

// generation_config.json when the backbone has none: what transformers derives from a config
// (GenerationConfig.from_model_config takes these three ids), with the options as fallbacks.
absl::StatusOr<std::string> GenerationConfig(const CheckpointExportOptions& o, const fs::path& config_path) {
  ASSIGN_OR_RETURN(std::string text, io::ReadFileToString(config_path.string()));
  nlohmann::json config = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(config_path.string(), ": not a JSON object"));
  }
  nlohmann::json gen = nlohmann::json::object();
  auto put = [&](const char* key, const std::optional<int64_t>& fallback) {
    auto it = config.find(key);
    if (it != config.end() && !it->is_null()) {
      gen[key] = *it;
    } else if (fallback.has_value()) {
      gen[key] = *fallback;
    }
  };
  put("bos_token_id", o.bos_token_id);
  put("eos_token_id", o.eos_token_id);
  put("pad_token_id", o.pad_token_id);
  if (!o.suppress_tokens.empty()) gen["suppress_tokens"] = o.suppress_tokens;
  return gen.dump(2) + "\n";
}

}  // namespace

absl::StatusOr<ExportedCheckpoint> WriteMergedCheckpoint(const CheckpointExportOptions& options,
                                                         std::string overlay_safetensors,
                                                         const std::string& out_dir) {
  if (options.max_shard_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_shard_bytes must be > 0, got ", options.max_shard_bytes));
  }
  const fs::path src(options.backbone_dir);
  const fs::path dst(out_dir);
  ASSIGN_OR_RETURN(std::unique_ptr<io::Checkpoint> base, io::Checkpoint::Open(options.backbone_dir));

  // The output tensors: every base tensor, the overlay's replacing theirs.
  std::map<std::string, OutTensor> out;
  for (const std::string& name : base->names()) {
    const io::TensorInfo* info = base->Find(name);
    ASSIGN_OR_RETURN(absl::Span<const uint8_t> bytes, base->RawBytes(name));
    out[name] = OutTensor{name, info->dtype, info->shape, bytes.data(), bytes.size(), ""};
  }
  ExportedCheckpoint result;
  std::unique_ptr<io::SafetensorsFile> overlay;
  if (!overlay_safetensors.empty()) {
    ASSIGN_OR_RETURN(overlay, io::SafetensorsFile::FromBytes(std::move(overlay_safetensors), "the version's weights"));
    for (const std::string& name : overlay->names()) {
      if (!hf::ParseExpertName(options.config.family, name).has_value()) {
        return absl::InvalidArgumentError(absl::StrCat("the version's weights hold ", name, ", not an expert tensor of ",
                                                       ModelFamilyName(options.config.family)));
      }
      const io::TensorInfo* info = overlay->Find(name);
      ASSIGN_OR_RETURN(std::vector<float> values, overlay->ReadF32(name));
      auto it = out.find(name);
      if (it != out.end()) {
        OutTensor& t = it->second;
        if (info->shape != t.shape) {
          return absl::FailedPreconditionError(absl::StrCat("the version's tensor ", name, " has shape ",
                                                            ShapeString(info->shape), ", the backbone's ",
                                                            ShapeString(t.shape)));
        }
        t.dtype = DType::kF32;
        t.owned.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
        t.data = reinterpret_cast<const uint8_t*>(t.owned.data());
        t.nbytes = t.owned.size();
      } else if (std::optional<hf::FusedSlice> slice = hf::FusedExpertSource(options.config, name)) {
        auto fused = out.find(slice->name);
        if (fused == out.end() || fused->second.shape != slice->fused_shape ||
            static_cast<int64_t>(values.size()) != slice->count) {
          return absl::FailedPreconditionError(absl::StrCat(
              "the version's tensor ", name, " (", ShapeString(info->shape), ") does not fit the backbone's fused ",
              slice->name, fused == out.end() ? " (absent)" : absl::StrCat(" ", ShapeString(fused->second.shape))));
        }
        OutTensor& t = fused->second;
        if (t.owned.empty()) {  // widen the fused tensor once, exactly
          const size_t numel = t.nbytes / DTypeSize(t.dtype);
          std::string widened(numel * sizeof(float), '\0');
          RETURN_IF_ERROR(io::ConvertToF32(t.dtype, t.data, numel, reinterpret_cast<float*>(widened.data())));
          t.owned = std::move(widened);
          t.dtype = DType::kF32;
          t.data = reinterpret_cast<const uint8_t*>(t.owned.data());
          t.nbytes = t.owned.size();
        }
        std::memcpy(t.owned.data() + slice->offset * sizeof(float), values.data(), values.size() * sizeof(float));
      } else {
        return absl::FailedPreconditionError(
            absl::StrCat("the version's tensor ", name, " is not in the backbone checkpoint ", options.backbone_dir));
      }
      ++result.merged_tensors;
    }
  }

  // Greedy packing in name order.
  std::vector<std::vector<const OutTensor*>> shards(1);
  int64_t in_shard = 0;
  int64_t total = 0;
  for (const auto& [name, t] : out) {
    const int64_t n = static_cast<int64_t>(t.nbytes);
    if (!shards.back().empty() && in_shard + n > options.max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&t);
    in_shard += n;
    total += n;
  }
  std::map<std::string, std::string> metadata = options.shard_metadata;
  metadata["format"] = "pt";  // transformers refuses safetensors without a known format
  result.num_shards = static_cast<int>(shards.size());
  if (shards.size() == 1) {
    RETURN_IF_ERROR(WriteShard((dst / "model.safetensors").string(), shards[0], metadata));
    result.files.push_back("model.safetensors");
  } else {
    nlohmann::json weight_map = nlohmann::json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
      const std::string file = absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
      RETURN_IF_ERROR(WriteShard((dst / file).string(), shards[i], metadata));
      for (const OutTensor* t : shards[i]) weight_map[t->name] = file;
      result.files.push_back(file);
    }
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    RETURN_IF_ERROR(WriteText(dst / "model.safetensors.index.json", index.dump(2) + "\n"));
    result.files.push_back("model.safetensors.index.json");
  }

  RETURN_IF_ERROR(CopyFile(src / "config.json", dst / "config.json"));
  result.files.push_back("config.json");
  if (fs::exists(src / "generation_config.json")) {
    RETURN_IF_ERROR(CopyFile(src / "generation_config.json", dst / "generation_config.json"));
  } else {
    ASSIGN_OR_RETURN(std::string gen, GenerationConfig(options, src / "config.json"));
    RETURN_IF_ERROR(WriteText(dst / "generation_config.json", gen));
  }
  result.files.push_back("generation_config.json");
  for (const char* name : kTokenizerFiles) {
    if (!fs::exists(src / name)) continue;
    RETURN_IF_ERROR(CopyFile(src / name, dst / name));
    result.files.push_back(name);
  }
  std::sort(result.files.begin(), result.files.end());
  return result;
}

}  // namespace tessera::exporting
