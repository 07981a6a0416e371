// Exact-match evaluation of prompt/completion examples with greedy decoding.
//
// For each example: input [BOS] + tokens(prompt); repeatedly append the argmax next token (ties: the
// lowest id) until EOS or max_new_tokens; the decoded bytes before EOS must equal the completion
// exactly. Examples run in batches; each step recomputes the batch's forward over the whole prefix
// (prompts here are a few dozen tokens, so a KV cache would save little and this keeps the check
// independent of the cache code).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/data/tasks.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"

namespace tessera::train {

struct ExactMatchResult {
  int64_t correct = 0;
  int64_t total = 0;
  double accuracy = 0.0;
  std::vector<std::string> outputs;  // decoded completion per example
};

absl::StatusOr<ExactMatchResult> EvaluateExactMatch(const Model& model, const ExpertOverlay* overlay,
                                                    const std::vector<data::Example>& examples,
                                                    const Tokenizer& tokenizer,
                                                    int max_new_tokens = 16, int batch_size = 64);

}  // namespace tessera::train
