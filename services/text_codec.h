// TextCodec: a backbone's tokenizer and chat template, and the one place where a request's text input
// (raw text or a conversation) becomes token ids, for serving (Generate, Score) and for training data.
//
// Which tokenizer: "builtin:*" and "random:*" backbones use the byte-level vocabulary (ByteTokenizer)
// and the builtin chat template; a checkpoint directory uses its tokenizer.json (HfTokenizer), or the
// byte-level vocabulary when it has no tokenizer.json and a byte-sized vocabulary (259..512 rows, the
// checkpoints tessera-pretrain writes); any other directory without tokenizer.json is refused. The chat
// template comes from the directory (chat_template.jinja or tokenizer_config.json's chat_template); a
// checkpoint without one serves raw prompts only (messages -> FAILED_PRECONDITION).
//
// Encoding rules (as transformers does them):
//   raw text, generation or scoring: the tokenizer's default special tokens are added (e.g. BOS);
//   messages, generation:            render(add_generation_prompt = true), no special tokens added
//                                    (the template writes them);
//   messages, scoring:               render(add_generation_prompt = false), likewise.
// Immutable after creation; shared by the inference engine, the dataset validator and training jobs.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/chat/chat_template.h"
#include "core/chat/chat_template_loader.h"
#include "core/data/jsonl_dataset.h"
#include "core/model/config.h"
#include "core/tokenizer/tokenizer.h"
#include "services/inference_engine.h"

namespace tessera::services {

class TextCodec {
 public:
  // `spec` is the --backbone value; `dir` its checkpoint directory ("" for random:*).
  static absl::StatusOr<std::shared_ptr<const TextCodec>> ForBackbone(const std::string& spec,
                                                                      const std::string& dir,
                                                                      const ModelConfig& config);
  // Over given parts (tests, tools). `chat` may be empty (no chat template).
  TextCodec(std::shared_ptr<const Tokenizer> tokenizer, std::optional<chat::CheckpointChatTemplate> chat,
            std::vector<std::string> chat_stop_strings = {}, bool chat_adds_bos = false);

  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const std::shared_ptr<const Tokenizer>& shared_tokenizer() const { return tokenizer_; }
  // Null when the backbone has no chat template.
  const chat::ChatTemplate* chat_template() const { return chat_ ? chat_->chat_template.get() : nullptr; }
  // The template variables (bos_token, eos_token, ...) the checkpoint names.
  chat::ChatRenderOptions chat_options() const { return chat_ ? chat_->defaults : chat::ChatRenderOptions{}; }

  // What ends a chat reply besides the tokenizer's eos_ids(): the family's end-of-turn token when it is
  // a special token of the vocabulary (<|im_end|>, <|eot_id|>, ...), and for templates whose turn end
  // is plain text (builtin:tiny's "<|end|>") a stop string.
  const std::vector<int32_t>& chat_end_ids() const { return chat_end_ids_; }
  const std::vector<std::string>& chat_stop_strings() const { return chat_stop_strings_; }

  // Token ids for Generate (generation = true) or Score (false); see the file comment.
  // INVALID_ARGUMENT for invalid UTF-8 or a conversation the template rejects (its message),
  // FAILED_PRECONDITION for messages on a backbone without a chat template.
  absl::StatusOr<std::vector<int32_t>> Encode(const TextInput& input, bool generation) const;
  absl::StatusOr<std::string> RenderChat(const std::vector<ChatMessage>& messages,
                                         bool add_generation_prompt) const;

  // A training/validation dataset (JSON Lines: text, prompt/completion or messages), tokenized as the
  // server trains on it; errors name the line (core/data/jsonl_dataset.h).
  absl::StatusOr<data::ParsedDataset> ParseDataset(std::string_view jsonl, const data::DatasetLimits& limits = {}) const;

  // One line for logs and --help output, e.g. "BPE (byte-level), 32000 tokens, chat template: yes".
  std::string Describe() const;

 private:
  std::shared_ptr<const Tokenizer> tokenizer_;
  std::optional<chat::CheckpointChatTemplate> chat_;
  std::vector<int32_t> chat_end_ids_;
  std::vector<std::string> chat_stop_strings_;
  // builtin:tiny's template writes no BOS text (its vocabulary has no token strings), and the model was
  // pretrained with BOS first: its conversations start with the BOS id.
  bool chat_adds_bos_ = false;
};

}  // namespace tessera::services
