#include "core/train/data_order.h"

#include <numeric>

namespace tessera::train {

DataOrder::DataOrder(int64_t num_examples, uint64_t seed)
    : n_(num_examples), rng_(data::DeriveSeed(seed, 0x6f72646572ull)) {
  state_.epoch_rng_state = rng_.state();
  DrawPermutation();
}

void DataOrder::DrawPermutation() {
  perm_.resize(n_);
  std::iota(perm_.begin(), perm_.end(), 0);
  rng_.Shuffle(perm_);
}

int64_t DataOrder::Next() {
  if (state_.index >= n_) {
    ++state_.epoch;
    state_.index = 0;
    state_.epoch_rng_state = rng_.state();
    DrawPermutation();
  }
  return perm_[state_.index++];
}

void DataOrder::Restore(const State& state) {
  state_ = state;
  rng_.set_state(state.epoch_rng_state);
  DrawPermutation();
}

}  // namespace tessera::train
