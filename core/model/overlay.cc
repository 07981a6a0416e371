// ExpertOverlay: building, validation, serialization, digest (see overlay.h).
#include "core/model/overlay.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/io/safetensors.h"
#include "core/model/hf_names.h"
#include "core/util/status_macros.h"

namespace tessera {
namespace {

constexpr hf::ExpertPart kParts[3] = {hf::ExpertPart::kGate, hf::ExpertPart::kUp, hf::ExpertPart::kDown};

Tensor& Part(ExpertWeights& w, int p) { return p == 0 ? w.gate : p == 1 ? w.up : w.down; }
const Tensor& Part(const ExpertWeights& w, int p) { return p == 0 ? w.gate : p == 1 ? w.up : w.down; }

}  // namespace

std::string SlotId::ToString() const { return absl::StrCat("L", layer, ".E", expert); }

absl::Status ValidateSlot(const ModelConfig& config, SlotId slot) {
  if (slot.layer < 0 || slot.layer >= config.num_layers || slot.expert < 0 ||
      slot.expert >= config.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("slot (layer ", slot.layer, ", expert ", slot.expert,
                                                   ") is out of range for ", config.num_layers,
                                                   " layers x ", config.num_experts, " experts"));
  }
  if (config.IsDenseLayer(slot.layer)) {
    return absl::InvalidArgumentError(absl::StrCat("slot (layer ", slot.layer, ", expert ", slot.expert,
                                                   ") is in a dense layer (no experts to fine-tune)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const ExpertOverlay>> ExpertOverlay::FromSafetensors(
    const ModelConfig& config, std::string bytes, Backend* backend, std::string digest, DType dtype,
    const SlotAllocator& allocate_slot) {
  if (backend == nullptr) return absl::InvalidArgumentError("ExpertOverlay: backend is null");
  if (dtype != DType::kF32 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("overlay: dtype must be f32 or bf16, got ", DTypeName(dtype)));
  }
  ASSIGN_OR_RETURN(auto file, io::SafetensorsFile::FromBytes(std::move(bytes), "overlay"));
  if (file->size() == 0) return absl::InvalidArgumentError("overlay: the blob holds no tensors");
  std::map<SlotId, std::array<bool, 3>> seen;
  for (const std::string& name : file->names()) {
    auto parsed = hf::ParseExpertName(config.family, name);
    if (!parsed) {
      return absl::InvalidArgumentError(absl::StrCat("overlay: tensor '", name, "' is not an expert tensor of a ",
                                                     ModelFamilyName(config.family), " model"));
    }
    SlotId slot{static_cast<int32_t>(parsed->layer), static_cast<int32_t>(parsed->expert)};
    if (parsed->layer >= config.num_layers || parsed->expert >= config.num_experts) {
      return absl::InvalidArgumentError(absl::StrCat("overlay: tensor '", name, "' names slot ", slot.ToString(),
                                                      ", out of range for ", config.num_layers, " layers x ",
                                                      config.num_experts, " experts"));
    }
    seen[slot][static_cast<int>(parsed->part)] = true;
  }
  std::map<SlotId, ExpertWeights> slots;
  std::vector<float> host;
  Tensor staging;  // bf16: f32 on the device (one part's elements; all three parts have F*D), converted per part
  if (dtype != DType::kF32) { ASSIGN_OR_RETURN(staging, backend->Alloc({config.expert_dim * config.hidden_size}, DType::kF32)); }
  for (const auto& [slot, parts] : seen) {
    for (int p = 0; p < 3; ++p) {
      if (!parts[p]) {
        return absl::InvalidArgumentError(absl::StrCat("overlay: slot ", slot.ToString(), " lacks tensor '",
                                                       hf::ExpertName(config.family, slot.layer, slot.expert, kParts[p]), "'"));
      }
    }
  }
  for (const auto& [slot, parts] : seen) {
    ASSIGN_OR_RETURN(ExpertWeights w,
                     allocate_slot ? allocate_slot() : AllocateExpertWeights(config, dtype, backend));
    if (allocate_slot) {
      for (int p = 0; p < 3; ++p) {
        const Tensor& t = Part(w, p);
        if (t.shape() != ExpertPartShape(config, p) || t.dtype() != dtype || t.device() != backend->device()) {
          return absl::InternalError(absl::StrCat("overlay: the slot allocator returned ", t.DebugString(), " for a ",
                                                  DTypeName(dtype), ShapeString(ExpertPartShape(config, p)), " part"));
        }
      }
    }
    for (int p = 0; p < 3; ++p) {
      const std::string name = hf::ExpertName(config.family, slot.layer, slot.expert, kParts[p]);
      const std::vector<int64_t> shape = ExpertPartShape(config, p);
      // Uploads f32 values: into the tensor itself, or (bf16) into staging and converted on the device.
      Tensor f32_dst = dtype == DType::kF32 ? Part(w, p) : staging.Reshape(shape);
      const io::TensorInfo* info = file->Find(name);
      if (info != nullptr && info->dtype == DType::kF32 && info->shape == shape) {
        // Stored as f32 (what the trainer writes): upload straight from the blob, no host copy.
        ASSIGN_OR_RETURN(absl::Span<const uint8_t> raw, file->RawBytes(name));
        RETURN_IF_ERROR(backend->CopyFromHost(raw.data(), raw.size(), f32_dst));
      } else {
        host.resize(static_cast<size_t>(shape[0] * shape[1]));
        RETURN_IF_ERROR(file->ReadF32Into(name, shape, host.data()));  // converts; names a wrong shape
        RETURN_IF_ERROR(backend->CopyFromHost(host.data(), host.size() * sizeof(float), f32_dst));
      }
      if (dtype != DType::kF32) RETURN_IF_ERROR(backend->Copy(f32_dst, Part(w, p)));
    }
    slots.emplace(slot, std::move(w));
  }
  return FromWeights(config, std::move(slots), backend, std::move(digest));
}

absl::StatusOr<std::shared_ptr<const ExpertOverlay>> ExpertOverlay::FromWeights(
    const ModelConfig& config, std::map<SlotId, ExpertWeights> slots, Backend* backend,
    std::string digest) {
  if (backend == nullptr) return absl::InvalidArgumentError("ExpertOverlay: backend is null");
  // Every tensor must share the first one's dtype (f32 or bf16).
  DType dtype = DType::kF32;
  if (!slots.empty() && slots.begin()->second.gate.defined()) dtype = slots.begin()->second.gate.dtype();
  if (dtype != DType::kBF16) dtype = DType::kF32;
  for (const auto& [slot, w] : slots) {
    RETURN_IF_ERROR(ValidateSlot(config, slot));
    for (int p = 0; p < 3; ++p) {
      const Tensor& t = Part(w, p);
      const std::string name = hf::ExpertName(config.family, slot.layer, slot.expert, kParts[p]);
      if (!t.defined() || t.shape() != ExpertPartShape(config, p) || t.dtype() != dtype ||
          t.device() != backend->device()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "overlay: tensor '", name, "' must be ", DTypeName(dtype), ShapeString(ExpertPartShape(config, p)), " on ",
            DeviceName(backend->device()), ", got ", t.defined() ? t.DebugString() : "undefined"));
      }
    }
  }
  std::shared_ptr<ExpertOverlay> o(new ExpertOverlay());
  o->config_ = config;
  o->backend_ = backend;
  o->slots_ = std::move(slots);
  o->dtype_ = dtype;
  if (digest.empty()) {
    ASSIGN_OR_RETURN(digest, o->ComputeDigest());
  }
  o->digest_ = std::move(digest);
  return std::shared_ptr<const ExpertOverlay>(std::move(o));
}

absl::StatusOr<std::shared_ptr<const ExpertOverlay>> ExpertOverlay::CopyOfBase(
    const ModelConfig& config, const ModelWeights& base, absl::Span<const SlotId> slot_ids,
    Backend* backend) {
  if (backend == nullptr) return absl::InvalidArgumentError("ExpertOverlay: backend is null");
  std::map<SlotId, ExpertWeights> slots;
  for (SlotId s : slot_ids) {
    RETURN_IF_ERROR(ValidateSlot(config, s));
    if (static_cast<int64_t>(base.layers.size()) != config.num_layers) {
      return absl::InvalidArgumentError("overlay: base weights do not match the config");
    }
    const ExpertWeights& src = base.layers[s.layer].experts[s.expert];
    ASSIGN_OR_RETURN(ExpertWeights w, AllocateExpertWeights(config, base.matrix_dtype(), backend));
    for (int p = 0; p < 3; ++p) RETURN_IF_ERROR(backend->Copy(Part(src, p), Part(w, p)));
    slots[s] = std::move(w);
  }
  return FromWeights(config, std::move(slots), backend);
}

absl::StatusOr<std::string> ExpertOverlay::Serialize(const std::map<std::string, std::string>& metadata) const {
  std::vector<std::vector<float>> host;
  std::vector<io::HostTensor> tensors;
  host.reserve(slots_.size() * 3);
  for (const auto& [slot, w] : slots_) {
    for (int p = 0; p < 3; ++p) {
      ASSIGN_OR_RETURN(host.emplace_back(), backend_->ToHostF32(Part(w, p)));
      tensors.push_back({hf::ExpertName(config_.family, slot.layer, slot.expert, kParts[p]), DType::kF32,
                         Part(w, p).shape(), host.back().data()});
    }
  }
  return io::SerializeSafetensors(tensors, metadata);
}

absl::StatusOr<std::string> ExpertOverlay::ComputeDigest() const {
  // Two independent 64-bit FNV-1a style lanes over names, shapes and float bits.
  uint64_t h1 = 0xcbf29ce484222325ull, h2 = 0x84222325cbf29ce4ull;
  auto mix = [&](const void* data, size_t n) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) {
      h1 = (h1 ^ p[i]) * 0x100000001b3ull;
      h2 = (h2 ^ p[i]) * 0x00000100000001b3ull + 0x9E3779B97F4A7C15ull;
    }
  };
  for (const auto& [slot, w] : slots_) {
    for (int p = 0; p < 3; ++p) {
      const std::string name = hf::ExpertName(config_.family, slot.layer, slot.expert, kParts[p]);
      mix(name.data(), name.size());
      ASSIGN_OR_RETURN(std::vector<float> v, backend_->ToHostF32(Part(w, p)));
      mix(v.data(), v.size() * sizeof(float));
    }
  }
  return absl::StrFormat("fnv128:%016x%016x", h1, h2);
}

const ExpertWeights* ExpertOverlay::Find(SlotId slot) const {
  auto it = slots_.find(slot);
  return it == slots_.end() ? nullptr : &it->second;
}

std::vector<SlotId> ExpertOverlay::SlotIds() const {
  std::vector<SlotId> out;
  for (const auto& [s, w] : slots_) out.push_back(s);
  return out;
}

int64_t ExpertOverlay::bytes() const {
  int64_t n = 0;
  for (const auto& [s, w] : slots_) n += w.gate.nbytes() + w.up.nbytes() + w.down.nbytes();
  return n;
}

}  // namespace tessera
