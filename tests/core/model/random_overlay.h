// Test helper shared by the model and runtime tests: an overlay on `slots` whose gate/up/down weights
// are fresh U(-0.3, 0.3) values (far larger than a backbone's init, so an overlay visibly changes the
// output). Deterministic for a seed.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "absl/status/statusor.h"
#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/overlay.h"
#include "core/model/weights.h"

namespace tessera {

inline absl::StatusOr<std::shared_ptr<const ExpertOverlay>> RandomOverlay(const ModelConfig& config, Backend* be,
                                                                          const std::vector<SlotId>& slots,
                                                                          uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-0.3f, 0.3f);
  std::map<SlotId, ExpertWeights> m;
  for (SlotId s : slots) {
    ExpertWeights w;
    for (int p = 0; p < 3; ++p) {
      std::vector<int64_t> shape = ExpertPartShape(config, p);
      std::vector<float> v(shape[0] * shape[1]);
      for (float& x : v) x = u(rng);
      absl::StatusOr<Tensor> t = be->FromHost(v, shape);
      if (!t.ok()) return t.status();
      (p == 0 ? w.gate : p == 1 ? w.up : w.down) = *t;
    }
    m[s] = w;
  }
  return ExpertOverlay::FromWeights(config, std::move(m), be);
}

}  // namespace tessera
