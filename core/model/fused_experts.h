// Reading and writing the per-expert tensors of families whose checkpoints store experts fused
// (granitemoe: input_linear [E, 2F, D], output_linear [E, D, F]; hf::FusedExpertSource says where each
// expert's matrix lives). Every other family, and every name that is not a fused expert tensor, goes
// through the plain per-name checkpoint read/write.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "core/backend/backend.h"
#include "core/io/checkpoint.h"
#include "core/io/safetensors.h"
#include "core/model/config.h"
#include "core/model/hf_names.h"
#include "core/model/weights.h"

namespace tessera {

// Loading: Defer() the parameters the checkpoint holds only as fused slices, then Load() streams each
// fused tensor once (ReadAs pieces in the destination dtype) into the deferred tensors.
class FusedExpertLoader {
 public:
  // True when `p` is absent from `ckpt` and is a slice of a fused tensor (remembered for Load).
  bool Defer(const ModelConfig& config, const io::Checkpoint& ckpt, const NamedParam& p);
  // Reads every fused tensor the deferred parameters come from. NOT_FOUND naming the fused tensor (and
  // a parameter it should hold) when the checkpoint lacks it; shape errors as ReadAs reports them.
  absl::Status Load(const io::Checkpoint& ckpt, size_t piece_bytes, Backend* backend);

 private:
  struct Target {
    int64_t offset = 0, count = 0;  // elements of the fused tensor
    Tensor* tensor = nullptr;
    std::string name;
  };
  struct Fused {
    std::vector<int64_t> shape;
    std::vector<Target> targets;
  };
  std::map<std::string, Fused> fused_;
};

class FusedExpertWriter {
 public:
  // True when `name` is a fused family's expert tensor: its values are copied into the fused tensor.
  bool Take(const ModelConfig& config, std::string_view name, const std::vector<float>& values);
  // Appends the fused tensors (f32) to `out`; they stay valid while this writer lives.
  void AppendTo(std::vector<io::HostTensor>* out) const;

 private:
  struct Fused {
    std::vector<int64_t> shape;
    std::vector<float> values;
  };
  std::map<std::string, Fused> fused_;
};

}  // namespace tessera
