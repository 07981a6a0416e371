// Checkpoint: resolves a path to one or more validated safetensors shards and routes reads by name.
#include "core/io/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/io/file_util.h"
#include "nlohmann/json.hpp"

namespace tessera::io {
namespace {

namespace fs = std::filesystem;
constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& path) {
  std::error_code ec;
  fs::path p(path);
  fs::path index_path;
  fs::path single_path;
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / kIndexFile, ec)) {
      index_path = p / kIndexFile;
    } else if (fs::exists(p / kSingleFile, ec)) {
      single_path = p / kSingleFile;
    } else {
      return absl::NotFoundError(absl::StrCat("checkpoint directory '", path, "' holds neither ",
                                              kIndexFile, " nor ", kSingleFile));
    }
  } else if (absl::EndsWith(path, ".index.json")) {
    index_path = p;
  } else if (fs::exists(p, ec)) {
    single_path = p;
  } else {
    return absl::NotFoundError(absl::StrCat("checkpoint '", path, "' does not exist"));
  }

  auto ckpt = std::unique_ptr<Checkpoint>(new Checkpoint());
  ckpt->path_ = path;
  if (!single_path.empty()) {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(single_path.string());
    if (!f.ok()) return f.status();
    ckpt->metadata_ = (*f)->metadata();
    for (const std::string& name : (*f)->names()) ckpt->by_name_.emplace(name, f->get());
    ckpt->shards_.push_back(std::move(*f));
    return ckpt;
  }

  ckpt->index_path_ = index_path.string();
  absl::StatusOr<std::string> text = ReadFileToString(index_path.string());
  if (!text.ok()) return text.status();
  const std::string where = absl::StrCat("checkpoint index '", index_path.string(), "'");
  nlohmann::json index = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded() || !index.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": not a JSON object"));
  }
  auto wm = index.find("weight_map");
  if (wm == index.end() || !wm->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": missing object \"weight_map\""));
  }
  if (auto meta = index.find("metadata"); meta != index.end() && meta->is_object()) {
    for (auto m = meta->begin(); m != meta->end(); ++m) {
      ckpt->metadata_[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
    }
  }
  const fs::path dir = index_path.parent_path();
  std::map<std::string, const SafetensorsFile*> opened;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    const std::string& name = it.key();
    if (!it.value().is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": weight_map entry for '", name, "' is not a file name"));
    }
    const std::string shard = it.value().get<std::string>();
    fs::path rel(shard);
    bool escapes = shard.empty() || rel.is_absolute();
    for (const fs::path& part : rel) escapes = escapes || part == "..";
    if (escapes) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": shard '", shard, "' for tensor '",
                                                     name, "' is not a file inside the checkpoint"));
    }
    auto found = opened.find(shard);
    if (found == opened.end()) {
      absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open((dir / rel).string());
      if (!f.ok()) {
        return absl::Status(f.status().code(), absl::StrCat(where, ": shard '", shard, "' (holding '",
                                                            name, "'): ", f.status().message()));
      }
      found = opened.emplace(shard, f->get()).first;
      ckpt->shards_.push_back(std::move(*f));
    }
    if (found->second->Find(name) == nullptr) {
      return absl::NotFoundError(absl::StrCat(where, ": tensor '", name, "' is mapped to shard '",
                                              shard, "' but that shard does not hold it"));
    }
    ckpt->by_name_.emplace(name, found->second);
  }
  return ckpt;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(by_name_.size());
  for (const auto& [name, shard] : by_name_) out.push_back(name);
  return out;
}

const TensorInfo* Checkpoint::Find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second->Find(name);
}

std::string Checkpoint::ShardOf(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? std::string() : it->second->path();
}

absl::StatusOr<const SafetensorsFile*> Checkpoint::ShardFor(std::string_view name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "tensor '", std::string(name), "' not found in checkpoint '", path_, "'",
        index_path_.empty() ? std::string() : absl::StrCat(" (its index '", index_path_, "' maps no shard to it)")));
  }
  return it->second;
}

absl::Status Checkpoint::ReadAs(std::string_view name, const std::vector<int64_t>& expected_shape, DType dtype,
                                size_t piece_bytes, const SafetensorsFile::PieceSink& sink) const {
  absl::StatusOr<const SafetensorsFile*> shard = ShardFor(name);
  if (!shard.ok()) return shard.status();
  return (*shard)->ReadAs(name, expected_shape, dtype, piece_bytes, sink);
}

std::vector<std::string> Checkpoint::shard_paths() const {
  std::vector<std::string> out;
  for (const auto& s : shards_) out.push_back(s->path());
  std::sort(out.begin(), out.end());
  return out;
}

absl::StatusOr<std::vector<float>> Checkpoint::ReadF32(std::string_view name) const {
  absl::StatusOr<const SafetensorsFile*> shard = ShardFor(name);
  if (!shard.ok()) return shard.status();
  return (*shard)->ReadF32(name);
}

absl::Status Checkpoint::ReadF32Into(std::string_view name, const std::vector<int64_t>& expected_shape,
                                     float* dst) const {
  absl::StatusOr<const SafetensorsFile*> shard = ShardFor(name);
  if (!shard.ok()) return shard.status();
  return (*shard)->ReadF32Into(name, expected_shape, dst);
}

absl::StatusOr<absl::Span<const uint8_t>> Checkpoint::RawBytes(std::string_view name) const {
  absl::StatusOr<const SafetensorsFile*> shard = ShardFor(name);
  if (!shard.ok()) return shard.status();
  return (*shard)->RawBytes(name);
}

}  // namespace tessera::io
