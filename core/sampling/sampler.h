// Sampler: picks the next token from a row of logits.
//
// Math, in order (the order HF generation applies them):
//   temperature == 0      -> greedy: argmax, ties to the lowest id (top_k/top_p then do not matter).
//   z_i = logit_i / T      temperature scaling
//   top_k > 0             -> keep the k largest z (ties to lower ids)
//   p = softmax(z) over the kept tokens
//   top_p < 1             -> keep the smallest prefix of tokens sorted by p (descending) whose cumulative
//                            probability is >= top_p (always at least one token), renormalize
//   draw u ~ U[0,1) from the sampler's own xoshiro256** stream and invert the cumulative distribution.
// NaN logits are treated as -inf; if no logit is finite the result is the greedy choice.
// Deterministic: the same params (seed) and the same sequence of logits give the same tokens on any
// platform with IEEE float/double and a correctly rounded exp to within its last bit.
// Each Sample call consumes at most one random number (none when greedy). Memory: O(vocab) scratch.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/sampling/rng.h"

namespace tessera {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy
  int top_k = 0;             // 0 = off
  float top_p = 1.0f;        // 1 = off; must be in (0, 1]
  uint64_t seed = 0;
};

class Sampler {
 public:
  // INVALID_ARGUMENT naming the field: temperature < 0 or not finite, top_k < 0, top_p not in (0, 1].
  static absl::Status Validate(const SamplingParams& params);
  static absl::StatusOr<Sampler> Create(const SamplingParams& params);
  // `params` must satisfy Validate (checked by Create; this constructor trusts the caller).
  explicit Sampler(const SamplingParams& params);

  // The chosen token id in [0, logits.size()); -1 only when `logits` is empty.
  int32_t Sample(absl::Span<const float> logits);

  const SamplingParams& params() const { return params_; }
  bool greedy() const { return params_.temperature == 0.0f || params_.top_k == 1; }

 private:
  SamplingParams params_;
  Xoshiro256 rng_;
  std::vector<std::pair<double, int32_t>> scratch_;  // ((logit - max) / T, id)
  std::vector<double> probs_;
};

// Argmax with ties to the lowest id; NaN counts as -inf. -1 for an empty span.
int32_t Greedy(absl::Span<const float> logits);

}  // namespace tessera
