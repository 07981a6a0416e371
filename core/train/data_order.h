// DataOrder: the order in which training examples are visited, reproducible from a seed and
// restorable from a small state (what a checkpoint stores as "RNG state and data position").
//
// Epoch e visits all n examples once in a random permutation drawn from the order's Rng; the Rng's
// state before drawing the current epoch's permutation, the epoch number and the index within the
// epoch are the whole state, so Restore(state()) continues exactly where the order was.
#pragma once

#include <cstdint>
#include <vector>

#include "core/data/rng.h"

namespace tessera::train {

class DataOrder {
 public:
  struct State {
    uint64_t epoch_rng_state = 0;  // Rng state before this epoch's permutation was drawn
    int64_t epoch = 0;
    int64_t index = 0;             // next position within the epoch
  };

  DataOrder(int64_t num_examples, uint64_t seed);

  int64_t Next();  // index of the next example
  State state() const { return state_; }
  void Restore(const State& state);

 private:
  void DrawPermutation();

  int64_t n_;
  data::Rng rng_;
  State state_;
  std::vector<int64_t> perm_;
};

}  // namespace tessera::train
