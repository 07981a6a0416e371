// Global-norm gradient clipping over a set of gradient tensors.
//
// norm = sqrt(sum over tensors of sum(g^2)) (accumulated in double); when max_norm > 0 and
// norm > max_norm every gradient is scaled by max_norm / norm, so the direction is kept and the global
// norm becomes max_norm. Returns the norm BEFORE clipping. A non-finite norm is returned as is and
// nothing is scaled (the caller decides; the Trainer stops with an error naming the step).
#pragma once

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/backend/backend.h"

namespace tessera::train {

absl::StatusOr<double> ClipGradNorm(Backend& backend, absl::Span<Tensor* const> grads, double max_norm);

}  // namespace tessera::train
