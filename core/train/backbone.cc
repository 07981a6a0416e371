#include "core/train/backbone.h"

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/io/checkpoint.h"
#include "core/io/file_util.h"
#include "nlohmann/json.hpp"
#include "core/model/hf_names.h"
#include "core/util/sha256.h"
#include "core/util/status_macros.h"

namespace tessera::train {
namespace fs = std::filesystem;

std::vector<std::string> DefaultBackboneSearchPath() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("TESSERA_BACKBONE_PATH"); env != nullptr && *env != '\0') {
    for (absl::string_view p : absl::StrSplit(env, ':', absl::SkipEmpty())) out.emplace_back(p);
  }
#ifdef TESSERA_DEFAULT_BACKBONE_DIR
  out.emplace_back(TESSERA_DEFAULT_BACKBONE_DIR);
#endif
  return out;
}

namespace {

absl::StatusOr<BackboneFiles> FilesIn(const fs::path& dir) {
  BackboneFiles f;
  f.dir = dir.string();
  f.config_path = (dir / "config.json").string();
  if (!fs::exists(f.config_path)) {
    return absl::NotFoundError(absl::StrCat(f.config_path, " does not exist"));
  }
  for (const char* name : {"model.safetensors", "model.safetensors.index.json"}) {
    if (fs::exists(dir / name)) {
      f.weights_path = (dir / name).string();
      return f;
    }
  }
  return absl::NotFoundError(absl::StrCat("no model.safetensors in ", f.dir));
}

}  // namespace

absl::StatusOr<BackboneFiles> LocateBackbone(std::string_view spec,
                                             const std::vector<std::string>& search_path) {
  constexpr std::string_view kBuiltin = "builtin:";
  if (spec.substr(0, kBuiltin.size()) != kBuiltin) return FilesIn(fs::path(std::string(spec)));
  const std::string dir_name = absl::StrCat("builtin-", std::string(spec.substr(kBuiltin.size())));
  std::vector<std::string> dirs = search_path;
  for (std::string& d : DefaultBackboneSearchPath()) dirs.push_back(std::move(d));
  std::vector<std::string> tried;
  for (const std::string& d : dirs) {
    fs::path candidate = fs::path(d) / dir_name;
    tried.push_back(candidate.string());
    auto files = FilesIn(candidate);
    if (files.ok()) return files;
  }
  return absl::NotFoundError(absl::StrCat(
      "backbone ", std::string(spec), " not found (tried: ", absl::StrJoin(tried, ", "),
      "); make it with: tessera-pretrain --out <dir>/", dir_name));
}

absl::StatusOr<DType> ResolveMatrixDtype(std::string_view requested, std::string_view config_dtype, DType stored) {
  if (requested == "f32") return DType::kF32;
  if (requested == "bf16") return DType::kBF16;
  if (requested == "auto") {
    if (config_dtype == "bfloat16" || config_dtype == "float16") return DType::kBF16;
    if (config_dtype == "float32") return DType::kF32;
    return stored == DType::kBF16 || stored == DType::kF16 ? DType::kBF16 : DType::kF32;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--dtype: expected auto, f32 or bf16, got \"", std::string(requested), "\""));
}

namespace {

absl::Status HashFileInto(const std::string& path, Sha256& sha) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::vector<uint8_t> buf(1 << 20);
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f.get())) > 0) sha.Update(buf.data(), n);
  if (std::ferror(f.get())) return absl::DataLossError(absl::StrCat("error reading ", path));
  return absl::OkStatus();
}

// config.json's declared dtype: "dtype" (transformers >= 4.56) or "torch_dtype"; "" when neither is a string.
absl::StatusOr<std::string> ConfigDtype(const std::string& config_path) {
  ASSIGN_OR_RETURN(std::string text, io::ReadFileToString(config_path));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(absl::StrCat(config_path, " is not a JSON object"));
  for (const char* key : {"dtype", "torch_dtype"}) {
    if (auto it = j.find(key); it != j.end() && it->is_string()) return it->get<std::string>();
  }
  return std::string();
}

absl::StatusOr<std::string> CheckpointDigest(const io::Checkpoint& ckpt, const std::string& weights_path) {
  if (ckpt.index_path().empty()) return Sha256FileHex(weights_path);
  Sha256 sha;
  RETURN_IF_ERROR(HashFileInto(ckpt.index_path(), sha));
  for (const std::string& shard : ckpt.shard_paths()) RETURN_IF_ERROR(HashFileInto(shard, sha));
  return sha.FinishHex();
}

}  // namespace

absl::StatusOr<Backbone> LoadBackbone(std::string_view spec, Backend* backend,
                                      const std::vector<std::string>& search_path, std::string_view dtype) {
  Backbone b;
  ASSIGN_OR_RETURN(b.files, LocateBackbone(spec, search_path));
  ASSIGN_OR_RETURN(b.config, ModelConfig::FromFile(b.files.config_path));
  ASSIGN_OR_RETURN(std::unique_ptr<io::Checkpoint> ckpt, io::Checkpoint::Open(b.files.weights_path));
  if (const io::TensorInfo* embed = ckpt->Find(hf::EmbedName()); embed != nullptr) b.stored_dtype = embed->dtype;
  ASSIGN_OR_RETURN(b.config_dtype, ConfigDtype(b.files.config_path));
  ASSIGN_OR_RETURN(const DType matrix_dtype, ResolveMatrixDtype(dtype, b.config_dtype, b.stored_dtype));
  ASSIGN_OR_RETURN(b.weights, ModelWeights::Load(b.config, *ckpt, backend, matrix_dtype));
  ASSIGN_OR_RETURN(b.sha256, CheckpointDigest(*ckpt, b.files.weights_path));
  return b;
}

}  // namespace tessera::train
