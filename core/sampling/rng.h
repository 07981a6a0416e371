// Portable pseudo-random numbers: xoshiro256** seeded through splitmix64.
//
// Why not <random>: std distributions are implementation-defined, so the same seed could produce
// different text on another standard library. These generators are fully specified, so a (seed, input)
// pair means the same output everywhere.
#pragma once

#include <cstdint>

namespace tessera {

// One step of splitmix64 on `state` (advanced in place); also a good 64-bit mixer for seeds.
uint64_t SplitMix64(uint64_t& state);

class Xoshiro256 {
 public:
  explicit Xoshiro256(uint64_t seed);
  uint64_t Next();
  // Uniform in [0, 1) with 53 random bits.
  double NextDouble();

 private:
  uint64_t s_[4];
};

}  // namespace tessera
