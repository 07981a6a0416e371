// AdamWState: one parameter's optimizer state — AdamW's first and second moments (f32) and, when the
// parameter is stored narrower than f32 (bf16 weights), an f32 master copy. AdamW then updates the
// master and the parameter receives its rounding after every step, so updates smaller than one bf16
// ulp still accumulate (in-place bf16 updates would round them away). For an f32 parameter there is no
// master and AdamW updates the parameter itself.
// Memory contract: m and v (and the master) have the parameter's shape, on its backend.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/backend/backend.h"

namespace tessera::train {

struct AdamWState {
  Tensor m, v;
  Tensor master;  // undefined for f32 parameters

  // Zero moments; the master (if any) starts as the parameter's values.
  static absl::StatusOr<AdamWState> Create(Backend& be, const Tensor& param);
  // One AdamW step from `grad`; `param` holds the (rounded) result afterwards.
  absl::Status Step(Backend& be, Tensor& param, const Tensor& grad, const AdamWParams& p);
  // This parameter's entry in a batched step (Backend::AdamWMany: a whole optimizer step in one call):
  // the master (or the parameter) is updated and a narrower parameter receives the master's rounding.
  // The entry points at `param`, `grad` and this state: they must outlive the call.
  AdamWTensor Entry(Tensor& param, const Tensor& grad, float weight_decay);
  // The f32 values AdamW updates (what a checkpoint saves): the master, or the parameter itself.
  Tensor& Weights(Tensor& param) { return master.defined() ? master : param; }
  const Tensor& Weights(const Tensor& param) const { return master.defined() ? master : param; }
  // After writing Weights(param) directly (restoring a checkpoint): the parameter takes the master's value.
  absl::Status SyncParam(Backend& be, Tensor& param);
  int64_t bytes() const { return m.nbytes() + v.nbytes() + (master.defined() ? master.nbytes() : 0); }
};

}  // namespace tessera::train
