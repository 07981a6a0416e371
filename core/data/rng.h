// Rng: a small, portable, seedable random number generator (SplitMix64).
//
// The standard library's distributions are implementation-defined, so corpora and data orders built
// with them could differ between standard libraries. Everything that must be reproducible from a seed
// (corpus bytes, task examples, data shuffles, selection of random slots) draws from this generator,
// whose whole state is one uint64 that checkpoints save and restore.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace tessera::data {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) : state_(seed) {}

  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) for n > 0 (multiply-shift; the bias is below 2^-32 for the n used here).
  uint64_t Uniform(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * n) >> 64);
  }
  // Uniform in [lo, hi] (inclusive).
  int64_t Range(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(Uniform(static_cast<uint64_t>(hi - lo + 1)));
  }
  // Uniform in [0, 1).
  double Double() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  bool Bernoulli(double p) { return Double() < p; }

  template <typename T>
  const T& Pick(const std::vector<T>& items) { return items[Uniform(items.size())]; }
  template <typename T, size_t N>
  const T& Pick(const T (&items)[N]) { return items[Uniform(N)]; }

  template <typename T>
  void Shuffle(std::vector<T>& items) {
    for (size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[Uniform(i)]);
  }

  uint64_t state() const { return state_; }
  void set_state(uint64_t s) { state_ = s; }

 private:
  uint64_t state_;
};

// A seed derived from a base seed and a stream label, so independent streams never overlap.
inline uint64_t DeriveSeed(uint64_t seed, uint64_t stream) {
  Rng r(seed ^ (stream * 0xD1B54A32D192ED03ull));
  r.Next();
  return r.Next();
}

}  // namespace tessera::data
