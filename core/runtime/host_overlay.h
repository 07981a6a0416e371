// HostOverlay: a tenant overlay's slot tensors copied to host memory, byte for byte in the overlay's
// dtype -- the host tier's form (overlay_cache.h): parsed and merged already, so bringing it back to the
// device is one allocation and one host-to-device copy per tensor, with no blob read, no safetensors
// parse and no LoRA merge.
//
// Contract: FromDevice(o).Upload(...) gives an overlay with the same slots, shapes, dtype, bytes and
// digest as `o` and bit-identical tensor contents (raw bytes are copied; no dtype conversion), so what
// it computes is exactly what `o` computed. bytes() equals o.bytes(): the host tier is charged what the
// device tier was.
//
// Both calls use the backend (a device-to-host / host-to-device copy): the caller serializes them with
// the other backend users (the runtime's device mutex). On the CPU backend the "device" buffers are host
// memory too; the copies are still made, so the two tiers are separate memory with the same accounting.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/overlay.h"

namespace tessera::runtime {

class HostOverlay {
 public:
  // Copies every slot's gate/up/down tensors of `overlay` (on `backend`) to host memory.
  static absl::StatusOr<std::shared_ptr<const HostOverlay>> FromDevice(const ExpertOverlay& overlay,
                                                                       Backend* backend);

  // A device overlay with this content: each slot's tensors from `allocate_slot` (fresh backend
  // allocations when unset), filled from the host bytes. The backend's error when allocation fails.
  absl::StatusOr<std::shared_ptr<const ExpertOverlay>> Upload(const ModelConfig& config, Backend* backend,
                                                              const SlotAllocator& allocate_slot) const;

  const std::string& digest() const { return digest_; }
  int64_t bytes() const { return bytes_; }
  DType dtype() const { return dtype_; }

 private:
  HostOverlay() = default;
  std::string digest_;
  DType dtype_ = DType::kF32;
  int64_t bytes_ = 0;
  std::map<SlotId, std::array<std::vector<char>, 3>> parts_;  // gate, up, down raw bytes
};

}  // namespace tessera::runtime
