#include "core/train/schedule.h"

#include <cmath>
#include <numbers>

namespace tessera::train {

double LrSchedule::At(int64_t step) const {
  if (step < 1) step = 1;
  if (warmup_steps > 0 && step <= warmup_steps) {
    return peak_lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  }
  const double floor = peak_lr * min_lr_ratio;
  if (step >= max_steps || max_steps <= warmup_steps) return floor;
  const double t = static_cast<double>(step - warmup_steps) /
                   static_cast<double>(max_steps - warmup_steps);
  return floor + (peak_lr - floor) * 0.5 * (1.0 + std::cos(std::numbers::pi * t));
}

}  // namespace tessera::train
