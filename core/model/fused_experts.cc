// Fused expert tensors in checkpoints (see fused_experts.h).
#include "core/model/fused_experts.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "core/model/hf_names.h"
#include "core/util/status_macros.h"

namespace tessera {

bool FusedExpertLoader::Defer(const ModelConfig& c, const io::Checkpoint& ckpt, const NamedParam& p) {
  if (ckpt.Find(p.name) != nullptr) return false;
  std::optional<hf::FusedSlice> slice = hf::FusedExpertSource(c, p.name);
  if (!slice.has_value()) return false;
  Fused& f = fused_[slice->name];
  f.shape = slice->fused_shape;
  f.targets.push_back({slice->offset, slice->count, p.tensor, p.name});
  return true;
}

absl::Status FusedExpertLoader::Load(const io::Checkpoint& ckpt, size_t piece_bytes, Backend* backend) {
  for (auto& [name, f] : fused_) {
    if (ckpt.Find(name) == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("checkpoint is missing tensor '", name, "' (holding '", f.targets.front().name, "')"));
    }
    const DType dtype = f.targets.front().tensor->dtype();
    const size_t elem = DTypeSize(dtype);
    RETURN_IF_ERROR(ckpt.ReadAs(name, f.shape, dtype, piece_bytes, [&](const void* data, int64_t first, int64_t count) {
      // The piece [first, first + count) of the fused tensor, split over the expert tensors it overlaps.
      for (const Target& t : f.targets) {
        const int64_t lo = std::max(first, t.offset), hi = std::min(first + count, t.offset + t.count);
        if (lo >= hi) continue;
        Tensor piece = t.tensor->Reshape({t.tensor->numel()}).Rows(lo - t.offset, hi - lo);
        RETURN_IF_ERROR(backend->CopyFromHost(static_cast<const uint8_t*>(data) + (lo - first) * elem,
                                              static_cast<size_t>(hi - lo) * elem, piece));
      }
      return absl::OkStatus();
    }));
  }
  return absl::OkStatus();
}

bool FusedExpertWriter::Take(const ModelConfig& c, std::string_view name, const std::vector<float>& values) {
  std::optional<hf::FusedSlice> slice = hf::FusedExpertSource(c, name);
  if (!slice.has_value() || static_cast<int64_t>(values.size()) != slice->count) return false;
  Fused& f = fused_[slice->name];
  if (f.values.empty()) {
    int64_t numel = 1;
    for (int64_t dim : slice->fused_shape) numel *= dim;
    f.shape = slice->fused_shape;
    f.values.assign(static_cast<size_t>(numel), 0.0f);
  }
  std::copy(values.begin(), values.end(), f.values.begin() + slice->offset);
  return true;
}

void FusedExpertWriter::AppendTo(std::vector<io::HostTensor>* out) const {
  for (const auto& [name, f] : fused_) out->push_back({name, DType::kF32, f.shape, f.values.data()});
}

}  // namespace tessera
