// Training datasets in JSON Lines: parsing (with the validation the upload API needs) and writing.
//
// Format: one JSON object per line, either {"text": "..."} (loss on every token),
// {"prompt": "...", "completion": "..."} (loss on the completion only), or the OpenAI chat fine-tuning
// format {"messages": [{"role": ..., "content": ...}, ...]} (rendered with the backbone's chat template;
// loss on the assistant turns only, each assistant message may carry "weight": 0 to exclude it). Lines that are empty or only
// whitespace are skipped; a trailing "\r" is ignored. Any other deviation is INVALID_ARGUMENT whose
// message starts with "line N: " (1-based) and states the reason: invalid JSON (with the parser's
// reason), not an object, missing or non-string field, unknown field, both "text" and "prompt",
// empty text/completion, too many tokens. Limits give RESOURCE_EXHAUSTED/INVALID_ARGUMENT likewise.
//
// Tokenization of one example: [BOS] + tokens(prompt) + tokens(completion) + [EOS] (or BOS + text +
// EOS; BOS/EOS only where the tokenizer has them). loss_mask[i] == 1 marks token i as a training target
// (predicted from tokens before it): the completion's tokens and the final EOS, or every token after
// BOS for text. A conversation is its whole rendering tokenized at once, as it is served (no special
// tokens added: the template writes them), with the loss on the tokens of the assistant segments (which
// end with the template's end-of-turn text; a token straddling a segment boundary belongs to the later
// segment), preceded by BOS when DatasetChat::prepend_bos.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/chat/chat_template.h"
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
  int64_t num_chat = 0;
};

// How "messages" lines are rendered; without one (nullptr) such lines are INVALID_ARGUMENT.
struct DatasetChat {
  const chat::ChatTemplate* chat_template = nullptr;
  chat::ChatRenderOptions options;  // bos_token/eos_token and the other variables the template sees
  bool prepend_bos = false;         // the template writes no BOS text, but the model wants the BOS id
};

struct DatasetLimits {
  size_t max_bytes = 256u << 20;          // whole input
  int64_t max_examples = 1'000'000;
  int64_t max_tokens_per_example = 2048;  // after BOS/EOS are added
  int64_t min_examples = 1;
};

absl::StatusOr<ParsedDataset> ParseJsonlDataset(std::string_view bytes, const Tokenizer& tokenizer,
                                                const DatasetLimits& limits = {},
                                                const DatasetChat* chat = nullptr);

TokenizedExample TokenizePromptCompletion(std::string_view prompt, std::string_view completion,
                                          const Tokenizer& tokenizer);
TokenizedExample TokenizeText(std::string_view text, const Tokenizer& tokenizer);
// `messages`: a JSON array of {role, content[, weight]} objects. INVALID_ARGUMENT for a conversation the
// template rejects or one without an assistant message of weight 1.
absl::StatusOr<TokenizedExample> TokenizeChat(const nlohmann::ordered_json& messages, const Tokenizer& tokenizer,
                                              const DatasetChat& chat);

// Writers (one object per line, each line ending in "\n").
std::string ExamplesToJsonl(const std::vector<Example>& examples);
std::string TextsToJsonl(const std::vector<std::string>& texts);

}  // namespace tessera::data
