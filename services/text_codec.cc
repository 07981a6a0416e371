#include "services/text_codec.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/tokenizer/byte_tokenizer.h"
#include "core/tokenizer/hf_tokenizer.h"
#include "nlohmann/json.hpp"

namespace tessera::services {
namespace {

// End-of-turn tokens of the chat formats in use (ChatML/Qwen, Llama-3, Phi-style/Granite-style "<|end|>",
// Llama-3.1 tool turns). Only those the vocabulary has as special tokens count.
constexpr const char* kEndOfTurnTokens[] = {"<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>"};

nlohmann::ordered_json MessagesToJson(const std::vector<ChatMessage>& messages) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const ChatMessage& m : messages) out.push_back({{"role", m.role}, {"content", m.content}});
  return out;
}

}  // namespace

TextCodec::TextCodec(std::shared_ptr<const Tokenizer> tokenizer, std::optional<chat::CheckpointChatTemplate> chat,
                     std::vector<std::string> chat_stop_strings, bool chat_adds_bos)
    : tokenizer_(std::move(tokenizer)),
      chat_(std::move(chat)),
      chat_stop_strings_(std::move(chat_stop_strings)),
      chat_adds_bos_(chat_adds_bos) {
  for (const char* t : kEndOfTurnTokens) {
    std::optional<int32_t> id = tokenizer_->TokenToId(t);
    if (id.has_value() && tokenizer_->IsSpecialId(*id)) chat_end_ids_.push_back(*id);
  }
}

absl::StatusOr<std::shared_ptr<const TextCodec>> TextCodec::ForBackbone(const std::string& spec,
                                                                        const std::string& dir,
                                                                        const ModelConfig& config) {
  const bool builtin = absl::StartsWith(spec, "builtin:") || absl::StartsWith(spec, "random:");
  const bool has_tokenizer_json = !dir.empty() && std::filesystem::exists(dir + "/tokenizer.json");
  if (builtin || !has_tokenizer_json) {
    if (config.vocab_size < ByteTokenizer::kVocabSize || config.vocab_size > 512) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--backbone ", spec, ": no tokenizer.json in ", dir, ", and the vocabulary of ", config.vocab_size,
          " tokens is not the byte-level one (259..512 rows) that needs none"));
    }
    auto tokenizer = std::make_shared<ByteTokenizer>();
    chat::CheckpointChatTemplate tpl;
    tpl.chat_template = chat::BuiltinTinyChatTemplate();
    tpl.source_file = "builtin";
    return std::make_shared<const TextCodec>(tokenizer, std::move(tpl),
                                             std::vector<std::string>{chat::kBuiltinTinyEndOfTurn},
                                             /*chat_adds_bos=*/true);
  }
  absl::StatusOr<std::unique_ptr<HfTokenizer>> tokenizer = HfTokenizer::Create(dir);
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat("--backbone ", spec, ": ", tokenizer.status().message()));
  }
  if ((*tokenizer)->vocab_size() > config.vocab_size) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--backbone ", spec, ": the tokenizer has ", (*tokenizer)->vocab_size(),
        " ids but the model's vocabulary only ", config.vocab_size, " rows"));
  }
  absl::StatusOr<std::optional<chat::CheckpointChatTemplate>> tpl = chat::LoadChatTemplate(dir);
  if (!tpl.ok()) {
    return absl::Status(tpl.status().code(), absl::StrCat("--backbone ", spec, ": ", tpl.status().message()));
  }
  return std::make_shared<const TextCodec>(std::shared_ptr<const Tokenizer>(*std::move(tokenizer)),
                                           *std::move(tpl));
}

absl::StatusOr<std::string> TextCodec::RenderChat(const std::vector<ChatMessage>& messages,
                                                  bool add_generation_prompt) const {
  if (!chat_) {
    return absl::FailedPreconditionError(
        "this backbone has no chat template (no chat_template.jinja or tokenizer_config.json "
        "chat_template): send a raw prompt instead of messages");
  }
  chat::ChatRenderOptions opts = chat_->defaults;
  opts.add_generation_prompt = add_generation_prompt;
  return chat_->chat_template->Render(MessagesToJson(messages), opts);
}

absl::StatusOr<std::vector<int32_t>> TextCodec::Encode(const TextInput& input, bool generation) const {
  if (!input.is_chat()) return tokenizer_->EncodeText(input.text, /*add_special_tokens=*/true);
  absl::StatusOr<std::string> text = RenderChat(input.messages, /*add_generation_prompt=*/generation);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->EncodeText(*text, /*add_special_tokens=*/false);
  if (ids.ok() && chat_adds_bos_) ids->insert(ids->begin(), tokenizer_->bos_id());
  return ids;
}

absl::StatusOr<data::ParsedDataset> TextCodec::ParseDataset(std::string_view jsonl,
                                                            const data::DatasetLimits& limits) const {
  data::DatasetChat chat;
  chat.chat_template = chat_template();
  chat.options = chat_options();
  chat.prepend_bos = chat_adds_bos_;
  return data::ParseJsonlDataset(jsonl, *tokenizer_, limits, &chat);
}

std::string TextCodec::Describe() const {
  return absl::StrCat(tokenizer_->kind(), ", ", tokenizer_->vocab_size(), " tokens, chat template: ",
                      chat_ ? chat_->source_file : "none");
}

}  // namespace tessera::services
