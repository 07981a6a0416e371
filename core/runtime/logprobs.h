// Token log-probabilities as OpenAI and vLLM report them: the log-softmax of the model's raw logits
// (before temperature, top-k and top-p, which shape only the sampling), for the sampled token and the
// `top` most likely alternatives.
//
//   logprob(j) = logit_j - logsumexp(logits)   over the whole row, every id of the vocabulary.
//
// The normalizer is taken over the raw row, ids the runtime never samples included (rows beyond the
// tokenizer's vocabulary, PAD, BOS), so a token's logprob equals the log-likelihood Score reports for it
// (Model::ScoreTokens normalizes over the same row). The alternatives are chosen among the ids that
// could have been sampled (finite in the masked row), most likely first, ties by lower id.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/types/span.h"

namespace tessera::runtime {

struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // (id, logprob), most likely first
};

// log(sum_j exp(row[j])), computed stably (max-shifted, double accumulator). -inf for an all -inf row.
double LogSumExp(absl::Span<const float> row);

// The entry for `token` given the normalizer of the raw row (`log_z` = LogSumExp(raw)) and the row the
// sampler saw (`masked`: ids never sampled are -inf there; the others equal the raw logits).
TokenLogprob TokenLogprobOf(absl::Span<const float> masked, double log_z, int32_t token, int top);

}  // namespace tessera::runtime
