// LoRA versions: parsing, serialization and the merge (see lora_overlay.h).
#include "core/model/lora_overlay.h"

#include <cmath>
#include <cstring>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/io/safetensors.h"
#include "core/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

constexpr hf::ExpertPart kParts[3] = {hf::ExpertPart::kGate, hf::ExpertPart::kUp, hf::ExpertPart::kDown};
const std::string kWeightSuffix = ".weight";
const std::string kASuffix = ".lora_A.weight";
const std::string kBSuffix = ".lora_B.weight";

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Tensor& Part(ExpertWeights& w, int p) { return p == 0 ? w.gate : p == 1 ? w.up : w.down; }
const Tensor& Part(const ExpertWeights& w, int p) { return p == 0 ? w.gate : p == 1 ? w.up : w.down; }

// The expert tensor a LoRA factor name belongs to, and whether it is B.
std::optional<std::pair<std::string, bool>> FactorOf(const std::string& name) {
  for (bool is_b : {false, true}) {
    const std::string& suffix = is_b ? kBSuffix : kASuffix;
    if (EndsWith(name, suffix)) {
      return std::make_pair(name.substr(0, name.size() - suffix.size()) + kWeightSuffix, is_b);
    }
  }
  return std::nullopt;
}

}  // namespace

std::string LoraTensorName(ModelFamily family, int64_t layer, int64_t expert, hf::ExpertPart part, bool is_b) {
  std::string name = hf::ExpertName(family, layer, expert, part);
  name.resize(name.size() - kWeightSuffix.size());
  return name + (is_b ? kBSuffix : kASuffix);
}

std::vector<SlotId> LoraAdapter::SlotIds() const {
  std::set<SlotId> all;
  for (const auto& [s, f] : factors) all.insert(s);
  for (const auto& [s, d] : dense) all.insert(s);
  return {all.begin(), all.end()};
}

int64_t LoraAdapter::FactorElements() const {
  int64_t n = 0;
  for (const auto& [s, parts] : factors) {
    for (const LoraFactors& f : parts) n += static_cast<int64_t>(f.a.size() + f.b.size());
  }
  return n;
}

std::string SafetensorsFormat(std::string_view bytes) {
  if (bytes.size() < 8) return "";
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);  // little-endian hosts only, as the reader assumes
  if (header_len > bytes.size() - 8) return "";
  nlohmann::json h = nlohmann::json::parse(bytes.substr(8, header_len), nullptr, /*allow_exceptions=*/false);
  if (!h.is_object() || !h.contains("__metadata__") || !h["__metadata__"].is_object()) return "";
  const nlohmann::json& m = h["__metadata__"];
  if (!m.contains("format") || !m["format"].is_string()) return "";
  return m["format"].get<std::string>();
}

absl::StatusOr<LoraAdapter> LoraAdapter::Parse(const ModelConfig& config, std::string bytes) {
  ASSIGN_OR_RETURN(auto file, io::SafetensorsFile::FromBytes(std::move(bytes), "LoRA version"));
  LoraAdapter a;
  a.metadata = file->metadata();
  auto meta = [&](const char* key) -> absl::StatusOr<std::string> {
    auto it = a.metadata.find(key);
    if (it == a.metadata.end()) {
      return absl::InvalidArgumentError(absl::StrCat("LoRA version: metadata lacks \"", key, "\""));
    }
    return it->second;
  };
  ASSIGN_OR_RETURN(std::string format, meta("format"));
  if (format != kLoraFormat) {
    return absl::InvalidArgumentError(
        absl::StrCat("LoRA version: metadata format is \"", format, "\", expected \"", kLoraFormat, "\""));
  }
  ASSIGN_OR_RETURN(std::string rank, meta("lora_rank"));
  ASSIGN_OR_RETURN(std::string alpha, meta("lora_alpha"));
  if (!absl::SimpleAtoi(rank, &a.rank) || a.rank < 1) {
    return absl::InvalidArgumentError(absl::StrCat("LoRA version: lora_rank \"", rank, "\" is not a positive integer"));
  }
  if (!absl::SimpleAtod(alpha, &a.alpha) || !std::isfinite(a.alpha)) {
    return absl::InvalidArgumentError(absl::StrCat("LoRA version: lora_alpha \"", alpha, "\" is not a number"));
  }
  std::map<SlotId, std::array<int, 3>> factor_seen, dense_seen;  // bit 1: A, bit 2: B; dense: 1
  for (const std::string& name : file->names()) {
    std::optional<std::pair<std::string, bool>> factor = FactorOf(name);
    const std::string expert_name = factor ? factor->first : name;
    std::optional<hf::ParsedExpertName> parsed = hf::ParseExpertName(config.family, expert_name);
    if (!parsed) {
      return absl::InvalidArgumentError(absl::StrCat("LoRA version: tensor '", name, "' is neither an expert tensor ",
                                                     "nor a LoRA factor of one for a ", ModelFamilyName(config.family),
                                                     " model"));
    }
    const SlotId slot{static_cast<int32_t>(parsed->layer), static_cast<int32_t>(parsed->expert)};
    if (absl::Status s = ValidateSlot(config, slot); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("LoRA version: tensor '", name, "': ", s.message()));
    }
    const int p = static_cast<int>(parsed->part);
    const std::vector<int64_t> w_shape = ExpertPartShape(config, p);
    std::vector<int64_t> shape = w_shape;
    std::vector<float>* dst = nullptr;
    if (!factor) {
      dense_seen[slot][p] = 1;
      dst = &a.dense[slot][p];
    } else if (!factor->second) {
      shape = {a.rank, w_shape[1]};
      factor_seen[slot][p] |= 1;
      dst = &a.factors[slot][p].a;
    } else {
      shape = {w_shape[0], a.rank};
      factor_seen[slot][p] |= 2;
      dst = &a.factors[slot][p].b;
    }
    dst->resize(static_cast<size_t>(shape[0] * shape[1]));
    RETURN_IF_ERROR(file->ReadF32Into(name, shape, dst->data()));  // names the tensor and both shapes
  }
  for (const auto& [slot, parts] : factor_seen) {
    for (int p = 0; p < 3; ++p) {
      if (parts[p] != 3) {
        return absl::InvalidArgumentError(absl::StrCat(
            "LoRA version: slot ", slot.ToString(), " lacks tensor '",
            LoraTensorName(config.family, slot.layer, slot.expert, kParts[p], (parts[p] & 1) != 0), "'"));
      }
    }
  }
  for (const auto& [slot, parts] : dense_seen) {
    for (int p = 0; p < 3; ++p) {
      if (parts[p] == 0) {
        return absl::InvalidArgumentError(absl::StrCat("LoRA version: carried slot ", slot.ToString(), " lacks tensor '",
                                                       hf::ExpertName(config.family, slot.layer, slot.expert, kParts[p]),
                                                       "'"));
      }
    }
  }
  if (a.factors.empty() && a.dense.empty()) return absl::InvalidArgumentError("LoRA version: the blob holds no tensors");
  return a;
}

absl::StatusOr<LoraAdapter> LoraAdapter::FromDenseOverlay(const ExpertOverlay& overlay, Backend* backend,
                                                          int64_t rank, double alpha) {
  LoraAdapter a;
  a.rank = rank;
  a.alpha = alpha;
  for (const auto& [slot, w] : overlay.slots()) {
    for (int p = 0; p < 3; ++p) {
      ASSIGN_OR_RETURN(a.dense[slot][p], backend->ToHostF32(Part(w, p)));
    }
  }
  return a;
}

absl::StatusOr<std::string> LoraAdapter::Serialize(const ModelConfig& config,
                                                   const std::map<std::string, std::string>& metadata) const {
  if (rank < 1) return absl::InvalidArgumentError(absl::StrCat("LoRA version: rank must be >= 1, got ", rank));
  std::vector<io::HostTensor> tensors;
  for (const auto& [slot, parts] : factors) {
    for (int p = 0; p < 3; ++p) {
      const std::vector<int64_t> w = ExpertPartShape(config, p);
      const std::vector<int64_t> a_shape = {rank, w[1]}, b_shape = {w[0], rank};
      if (static_cast<int64_t>(parts[p].a.size()) != a_shape[0] * a_shape[1] ||
          static_cast<int64_t>(parts[p].b.size()) != b_shape[0] * b_shape[1]) {
        return absl::InvalidArgumentError(absl::StrCat("LoRA version: slot ", slot.ToString(), " part ", p,
                                                       " factors do not match rank ", rank));
      }
      tensors.push_back({LoraTensorName(config.family, slot.layer, slot.expert, kParts[p], false), DType::kF32,
                         a_shape, parts[p].a.data()});
      tensors.push_back({LoraTensorName(config.family, slot.layer, slot.expert, kParts[p], true), DType::kF32,
                         b_shape, parts[p].b.data()});
    }
  }
  for (const auto& [slot, parts] : dense) {
    for (int p = 0; p < 3; ++p) {
      const std::vector<int64_t> shape = ExpertPartShape(config, p);
      if (static_cast<int64_t>(parts[p].size()) != shape[0] * shape[1]) {
        return absl::InvalidArgumentError(absl::StrCat("LoRA version: carried slot ", slot.ToString(), " part ", p,
                                                       " has the wrong size"));
      }
      tensors.push_back({hf::ExpertName(config.family, slot.layer, slot.expert, kParts[p]), DType::kF32, shape,
                         parts[p].data()});
    }
  }
  std::map<std::string, std::string> meta = metadata;
  meta["format"] = kLoraFormat;
  meta["lora_rank"] = absl::StrCat(rank);
  meta["lora_alpha"] = absl::StrCat(alpha);
  return io::SerializeSafetensors(tensors, meta);
}

absl::Status MergeLoraPart(Backend* backend, const Tensor& w0, const Tensor& a, const Tensor& b, float scale,
                           Tensor& staging, Tensor& out) {
  if (w0.rank() != 2 || a.rank() != 2 || b.rank() != 2 || a.dim(1) != w0.dim(1) || b.dim(0) != w0.dim(0) ||
      a.dim(0) != b.dim(1) || staging.numel() != w0.numel() || out.numel() != w0.numel()) {
    return absl::InvalidArgumentError(absl::StrCat("MergeLoraPart: shapes W0 ", w0.DebugString(), ", A ",
                                                   a.DebugString(), ", B ", b.DebugString()));
  }
  Tensor s = staging.Reshape(w0.shape());
  RETURN_IF_ERROR(backend->Copy(w0, s));
  RETURN_IF_ERROR(backend->Matmul(b, false, a, false, s, scale, 1.0f));
  return backend->Copy(s, out);
}

absl::StatusOr<std::shared_ptr<const ExpertOverlay>> MergeLoraAdapter(const ModelConfig& config,
                                                                     const LoraAdapter& adapter,
                                                                     const ModelWeights& base, Backend* backend,
                                                                     std::string digest, DType dtype,
                                                                     const SlotAllocator& allocate_slot) {
  if (backend == nullptr) return absl::InvalidArgumentError("MergeLoraAdapter: backend is null");
  if (static_cast<int64_t>(base.layers.size()) != config.num_layers) {
    return absl::InvalidArgumentError("MergeLoraAdapter: the base weights do not match the config");
  }
  const int64_t part_elems = config.expert_dim * config.hidden_size;
  ASSIGN_OR_RETURN(Tensor staging, backend->Alloc({part_elems}, DType::kF32));
  Tensor dense_dev;  // a carried dense part, uploaded
  std::map<SlotId, ExpertWeights> slots;
  for (SlotId slot : adapter.SlotIds()) {
    RETURN_IF_ERROR(ValidateSlot(config, slot));
    ASSIGN_OR_RETURN(ExpertWeights w, allocate_slot ? allocate_slot() : AllocateExpertWeights(config, dtype, backend));
    auto dense = adapter.dense.find(slot);
    auto factors = adapter.factors.find(slot);
    for (int p = 0; p < 3; ++p) {
      const std::vector<int64_t> shape = ExpertPartShape(config, p);
      Tensor w0 = base.layers[slot.layer].experts[slot.expert].gate;
      if (p == 1) w0 = base.layers[slot.layer].experts[slot.expert].up;
      if (p == 2) w0 = base.layers[slot.layer].experts[slot.expert].down;
      if (dense != adapter.dense.end()) {
        ASSIGN_OR_RETURN(dense_dev, backend->FromHost(dense->second[p], shape));
        w0 = dense_dev;
      }
      if (factors == adapter.factors.end()) {
        RETURN_IF_ERROR(backend->Copy(w0, Part(w, p)));
        continue;
      }
      const LoraFactors& f = factors->second[p];
      ASSIGN_OR_RETURN(Tensor a, backend->FromHost(f.a, {adapter.rank, shape[1]}));
      ASSIGN_OR_RETURN(Tensor b, backend->FromHost(f.b, {shape[0], adapter.rank}));
      RETURN_IF_ERROR(MergeLoraPart(backend, w0, a, b, adapter.scale(), staging, Part(w, p)));
    }
    slots.emplace(slot, std::move(w));
  }
  return ExpertOverlay::FromWeights(config, std::move(slots), backend, std::move(digest));
}

absl::StatusOr<std::shared_ptr<const ExpertOverlay>> LoadVersionOverlay(const ModelConfig& config, std::string bytes,
                                                                       const ModelWeights* base, Backend* backend,
                                                                       std::string digest, DType dtype,
                                                                       const SlotAllocator& allocate_slot) {
  if (!IsLoraBlob(bytes)) {
    return ExpertOverlay::FromSafetensors(config, std::move(bytes), backend, std::move(digest), dtype, allocate_slot);
  }
  if (base == nullptr) {
    return absl::FailedPreconditionError("a LoRA version needs the backbone's weights to be merged into");
  }
  ASSIGN_OR_RETURN(LoraAdapter adapter, LoraAdapter::Parse(config, std::move(bytes)));
  return MergeLoraAdapter(config, adapter, *base, backend, std::move(digest), dtype, allocate_slot);
}

absl::StatusOr<std::string> MergedOverlayBlob(const ModelConfig& config, std::string bytes, const ModelWeights& base,
                                              Backend* backend) {
  if (!IsLoraBlob(bytes)) return bytes;
  ASSIGN_OR_RETURN(LoraAdapter adapter, LoraAdapter::Parse(config, std::move(bytes)));
  ASSIGN_OR_RETURN(auto overlay, MergeLoraAdapter(config, adapter, base, backend, "", DType::kF32));
  std::map<std::string, std::string> meta = adapter.metadata;
  meta["format"] = "tessera-expert-overlay-v1";
  meta["merged_from"] = kLoraFormat;
  return overlay->Serialize(meta);
}

}  // namespace tessera
