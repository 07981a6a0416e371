// HostOverlay (see host_overlay.h).
#include "core/runtime/host_overlay.h"

#include "absl/strings/str_cat.h"
#include "core/model/weights.h"
#include "core/util/status_macros.h"

namespace tessera::runtime {

absl::StatusOr<std::shared_ptr<const HostOverlay>> HostOverlay::FromDevice(const ExpertOverlay& overlay,
                                                                           Backend* backend) {
  std::shared_ptr<HostOverlay> h(new HostOverlay());
  h->digest_ = overlay.digest();
  h->dtype_ = overlay.dtype();
  h->bytes_ = overlay.bytes();
  for (const auto& [slot, w] : overlay.slots()) {
    std::array<std::vector<char>, 3>& parts = h->parts_[slot];
    const Tensor* src[3] = {&w.gate, &w.up, &w.down};
    for (int p = 0; p < 3; ++p) {
      parts[p].resize(src[p]->nbytes());
      RETURN_IF_ERROR(backend->CopyToHost(*src[p], parts[p].data(), parts[p].size()));
    }
  }
  return std::shared_ptr<const HostOverlay>(std::move(h));
}

absl::StatusOr<std::shared_ptr<const ExpertOverlay>> HostOverlay::Upload(const ModelConfig& config, Backend* backend,
                                                                        const SlotAllocator& allocate_slot) const {
  std::map<SlotId, ExpertWeights> slots;
  for (const auto& [slot, parts] : parts_) {
    ExpertWeights w;
    if (allocate_slot) {
      ASSIGN_OR_RETURN(w, allocate_slot());
    } else {
      ASSIGN_OR_RETURN(w, AllocateExpertWeights(config, dtype_, backend));
    }
    Tensor* dst[3] = {&w.gate, &w.up, &w.down};
    for (int p = 0; p < 3; ++p) {
      if (dst[p]->nbytes() != parts[p].size() || dst[p]->dtype() != dtype_) {
        return absl::InternalError(absl::StrCat("HostOverlay: slot ", slot.ToString(), " part ", p, " has ",
                                                parts[p].size(), " host bytes but the device tensor takes ",
                                                dst[p]->nbytes()));
      }
      RETURN_IF_ERROR(backend->CopyFromHost(parts[p].data(), parts[p].size(), *dst[p]));
    }
    slots.emplace(slot, std::move(w));
  }
  return ExpertOverlay::FromWeights(config, std::move(slots), backend, digest_);
}

}  // namespace tessera::runtime
