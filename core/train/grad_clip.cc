#include "core/train/grad_clip.h"

#include <cmath>

#include "core/util/status_macros.h"

namespace tessera::train {

absl::StatusOr<double> ClipGradNorm(Backend& backend, absl::Span<Tensor* const> grads,
                                    double max_norm) {
  double sum = 0.0;
  for (Tensor* g : grads) {
    ASSIGN_OR_RETURN(double s, backend.SumSquares(*g));
    sum += s;
  }
  const double norm = std::sqrt(sum);
  if (!std::isfinite(norm)) return norm;
  if (max_norm > 0.0 && norm > max_norm) {
    const float factor = static_cast<float>(max_norm / norm);
    for (Tensor* g : grads) RETURN_IF_ERROR(backend.Scale(*g, factor));
  }
  return norm;
}

}  // namespace tessera::train
