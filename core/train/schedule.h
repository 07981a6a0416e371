// Learning-rate schedule: linear warmup, then cosine decay to a floor.
//
//   step in [1, warmup]:          lr = peak * step / warmup
//   step in (warmup, max_steps]:  lr = floor + (peak - floor) * (1 + cos(pi * t)) / 2,
//                                 t = (step - warmup) / (max_steps - warmup), floor = peak * min_ratio
// Steps are 1-based (the step being taken). Beyond max_steps the floor is returned.
#pragma once

#include <cstdint>

namespace tessera::train {

struct LrSchedule {
  double peak_lr = 1e-3;
  int64_t warmup_steps = 0;
  int64_t max_steps = 1;
  double min_lr_ratio = 0.1;

  double At(int64_t step) const;
};

}  // namespace tessera::train
