#include "core/runtime/logprobs.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace tessera::runtime {

double LogSumExp(absl::Span<const float> row) {
  float max = -std::numeric_limits<float>::infinity();
  for (float v : row) max = std::max(max, v);
  if (!std::isfinite(max)) return max;
  double sum = 0;
  for (float v : row) sum += std::exp(static_cast<double>(v) - max);
  return max + std::log(sum);
}

TokenLogprob TokenLogprobOf(absl::Span<const float> masked, double log_z, int32_t token, int top) {
  TokenLogprob out;
  out.id = token;
  out.logprob = static_cast<float>(masked[token] - log_z);
  if (top <= 0) return out;
  std::vector<int32_t> ids;
  ids.reserve(masked.size());
  for (size_t j = 0; j < masked.size(); ++j) {
    if (std::isfinite(masked[j])) ids.push_back(static_cast<int32_t>(j));
  }
  const size_t k = std::min<size_t>(static_cast<size_t>(top), ids.size());
  auto more_likely = [&](int32_t a, int32_t b) { return masked[a] != masked[b] ? masked[a] > masked[b] : a < b; };
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), more_likely);
  out.top.reserve(k);
  for (size_t i = 0; i < k; ++i) out.top.emplace_back(ids[i], static_cast<float>(masked[ids[i]] - log_z));
  return out;
}

}  // namespace tessera::runtime
