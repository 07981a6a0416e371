#include "core/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace tessera {
namespace {

inline float Clean(float x) { return std::isnan(x) ? -std::numeric_limits<float>::infinity() : x; }

// Descending by value, ties to the lower id: a total order, so results do not depend on sort details.
inline bool Before(const std::pair<double, int32_t>& a, const std::pair<double, int32_t>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

}  // namespace

int32_t Greedy(absl::Span<const float> logits) {
  if (logits.empty()) return -1;
  int32_t best = 0;
  float best_v = Clean(logits[0]);
  for (size_t i = 1; i < logits.size(); ++i) {
    const float v = Clean(logits[i]);
    if (v > best_v) {
      best_v = v;
      best = static_cast<int32_t>(i);
    }
  }
  return best;
}

absl::Status Sampler::Validate(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be a finite number >= 0, got ", p.temperature));
  }
  if (p.top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0 (0 = off), got ", p.top_k));
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1], got ", p.top_p));
  }
  return absl::OkStatus();
}

absl::StatusOr<Sampler> Sampler::Create(const SamplingParams& params) {
  absl::Status s = Validate(params);
  if (!s.ok()) return s;
  return Sampler(params);
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

int32_t Sampler::Sample(absl::Span<const float> logits) {
  if (logits.empty()) return -1;
  if (greedy()) return Greedy(logits);

  const size_t n = logits.size();
  float max_logit = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < n; ++i) max_logit = std::max(max_logit, Clean(logits[i]));
  if (max_logit == -std::numeric_limits<float>::infinity()) return Greedy(logits);
  if (max_logit == std::numeric_limits<float>::infinity()) return Greedy(logits);  // +inf dominates

  // Shifting by the max before dividing keeps every scaled value <= 0, so no temperature, however
  // small, overflows; exp() of the shifted values is the softmax numerator.
  const double t = params_.temperature;
  scratch_.clear();
  scratch_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const float z = Clean(logits[i]);
    if (z == -std::numeric_limits<float>::infinity()) continue;  // probability 0 at any temperature
    scratch_.emplace_back((static_cast<double>(z) - max_logit) / t, static_cast<int32_t>(i));
  }

  size_t kept = scratch_.size();
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < kept) {
    kept = static_cast<size_t>(params_.top_k);
    std::partial_sort(scratch_.begin(), scratch_.begin() + kept, scratch_.end(), Before);
  } else if (params_.top_p < 1.0f) {
    std::sort(scratch_.begin(), scratch_.end(), Before);
  }
  // (Plain temperature sampling needs no order.)

  probs_.resize(kept);
  double total = 0.0;
  for (size_t i = 0; i < kept; ++i) {
    probs_[i] = std::exp(scratch_[i].first);
    total += probs_[i];
  }
  if (params_.top_p < 1.0f) {
    // scratch_[0, kept) is sorted descending here (partial_sort or sort above).
    const double target = static_cast<double>(params_.top_p) * total;
    double cum = 0.0;
    size_t keep = 0;
    while (keep < kept) {
      cum += probs_[keep++];
      if (cum >= target) break;
    }
    kept = keep;
    total = cum;
  }

  const double u = rng_.NextDouble() * total;
  double cum = 0.0;
  for (size_t i = 0; i < kept; ++i) {
    cum += probs_[i];
    if (u < cum) return scratch_[i].second;
  }
  return scratch_[kept - 1].second;  // u rounded up to the total
}

}  // namespace tessera
