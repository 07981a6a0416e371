// AdamWState (see adamw_state.h).
#include "core/train/adamw_state.h"

#include "core/util/status_macros.h"

namespace tessera::train {

absl::StatusOr<AdamWState> AdamWState::Create(Backend& be, const Tensor& param) {
  AdamWState s;
  ASSIGN_OR_RETURN(s.m, be.Zeros(param.shape()));
  ASSIGN_OR_RETURN(s.v, be.Zeros(param.shape()));
  if (param.dtype() != DType::kF32) {
    ASSIGN_OR_RETURN(s.master, be.Alloc(param.shape(), DType::kF32));
    RETURN_IF_ERROR(be.Copy(param, s.master));
  }
  return s;
}

absl::Status AdamWState::Step(Backend& be, Tensor& param, const Tensor& grad, const AdamWParams& p) {
  const AdamWTensor entry = Entry(param, grad, p.weight_decay);
  return be.AdamWMany({&entry, 1}, p);
}

AdamWTensor AdamWState::Entry(Tensor& param, const Tensor& grad, float weight_decay) {
  return AdamWTensor{&Weights(param), &grad, &m, &v, master.defined() ? &param : nullptr, weight_decay};
}

absl::Status AdamWState::SyncParam(Backend& be, Tensor& param) {
  return master.defined() ? be.Copy(master, param) : absl::OkStatus();
}

}  // namespace tessera::train
