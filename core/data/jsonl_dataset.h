// Training datasets in JSON Lines: parsing (with the validation the upload API needs) and writing.
//
// Format: one JSON object per line, either {"text": "..."} (loss on every token) or
// {"prompt": "...", "completion": "..."} (loss on the completion only). Lines that are empty or only
// whitespace are skipped; a trailing "\r" is ignored. Any other deviation is INVALID_ARGUMENT whose
// message starts with "line N: " (1-based) and states the reason: invalid JSON (with the parser's
// reason), not an object, missing or non-string field, unknown field, both "text" and "prompt",
// empty text/completion, too many tokens. Limits give RESOURCE_EXHAUSTED/INVALID_ARGUMENT likewise.
//
// Tokenization of one example: [BOS] + tokens(prompt) + tokens(completion) + [EOS] (or BOS + text +
// EOS). loss_mask[i] == 1 marks token i as a training target (predicted from tokens before it): the
// completion's tokens and the final EOS, or every token after BOS for text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/data/tasks.h"
#include "core/data/tokenized_example.h"
#include "core/tokenizer/tokenizer.h"

namespace tessera::data {

struct ParsedDataset {
  std::vector<TokenizedExample> examples;
  int64_t num_tokens = 0;       // sum of tokens over examples (BOS/EOS included)
  int64_t num_loss_tokens = 0;  // sum of loss_mask
  int64_t num_text = 0;         // examples of each form
  int64_t num_prompt_completion = 0;
};

struct DatasetLimits {
  size_t max_bytes = 256u << 20;          // whole input
  int64_t max_examples = 1'000'000;
  int64_t max_tokens_per_example = 2048;  // after BOS/EOS are added
  int64_t min_examples = 1;
};

absl::StatusOr<ParsedDataset> ParseJsonlDataset(std::string_view bytes, const Tokenizer& tokenizer,
                                                const DatasetLimits& limits = {});

TokenizedExample TokenizePromptCompletion(std::string_view prompt, std::string_view completion,
                                          const Tokenizer& tokenizer);
TokenizedExample TokenizeText(std::string_view text, const Tokenizer& tokenizer);

// Writers (one object per line, each line ending in "\n").
std::string ExamplesToJsonl(const std::vector<Example>& examples);
std::string TextsToJsonl(const std::vector<std::string>& texts);

}  // namespace tessera::data
