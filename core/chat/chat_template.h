// ChatTemplate: renders a conversation to text exactly as transformers' apply_chat_template(...,
// tokenize=False) does with the same template, or refuses.
//
// Create parses the Jinja2 source (core/chat/jinja_*); a template using a tag, filter, test, method or
// global function that is not supported fails there with INVALID_ARGUMENT naming it, so nothing is ever
// rendered differently from transformers. Render passes the variables transformers passes:
//   messages (each message with None-valued keys dropped, and reasoning_content/thinking aliased from
//   reasoning_content, thinking or reasoning as transformers does), add_generation_prompt, tools and
//   documents (None when not given), bos_token/eos_token when set, then `extra` (pad_token, unk_token,
//   enable_thinking, date_string, ...; extra wins on a clash, as **kwargs do over special tokens),
//   and the globals raise_exception, strftime_now, namespace, dict, range.
// An empty conversation is INVALID_ARGUMENT (transformers raises too); raise_exception(msg) in the
// template is INVALID_ARGUMENT whose message is exactly msg; other template errors are
// INVALID_ARGUMENT "line N: ...".
//
// RenderForTraining splits a conversation for supervised fine-tuning into segments whose concatenation
// is Render(messages, add_generation_prompt=false); the text each assistant message adds is a segment
// with loss=true (false with "weight": 0). It is found by the prefix method: for assistant message i,
// Render(messages[:i], add_generation_prompt=true) must be a prefix of Render(messages[:i+1]), which
// must be a prefix of the whole rendering; a template for which that fails (e.g. one that drops the
// reasoning of earlier turns) is FAILED_PRECONDITION naming the message, since its loss mask would be
// wrong. Messages are validated first: role one of system/user/assistant/tool, content a string,
// "weight" 0 or 1 and only on assistant messages (INVALID_ARGUMENT "messages[i]: ...").
//
// Thread-safe: a ChatTemplate is immutable after Create.
#pragma once

#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tessera::chat {

namespace jinja {
struct Program;
}

struct ChatRenderOptions {
  bool add_generation_prompt = false;
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  // More template variables (a JSON object): other special tokens, enable_thinking, date_string, ...
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
  nlohmann::ordered_json tools;      // null: the template sees tools=None
  nlohmann::ordered_json documents;  // null: documents=None
  // Clock of strftime_now (local time). Unset: the system clock's local time.
  std::function<std::tm()> now;
};

struct ChatSegment {
  std::string text;
  bool loss = false;
};

class ChatTemplate {
 public:
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Create(std::string source);
  ~ChatTemplate();

  // messages: a JSON array of message objects. ordered_json keeps the key order of the input, which
  // tojson reproduces; with plain json keys come out sorted.
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& messages, const ChatRenderOptions& opts) const;
  absl::StatusOr<std::string> Render(const nlohmann::json& messages, const ChatRenderOptions& opts) const;

  absl::StatusOr<std::vector<ChatSegment>> RenderForTraining(const nlohmann::ordered_json& messages,
                                                             const ChatRenderOptions& opts) const;

  const std::string& source() const { return source_; }

 private:
  ChatTemplate(std::string source, std::shared_ptr<const jinja::Program> program);
  std::string source_;
  std::shared_ptr<const jinja::Program> program_;
};

// The chat format of the byte-level builtin:tiny backbone (it has BOS/EOS ids but no token strings):
//   "<|system|>\n" + content + "<|end|>\n"    (likewise <|user|>, <|assistant|>)
//   and, with add_generation_prompt, a final "<|assistant|>\n".
// Plain ASCII; roles other than system/user/assistant and non-string content raise. Generation stops
// at kBuiltinTinyEndOfTurn (or the EOS id).
inline constexpr char kBuiltinTinyEndOfTurn[] = "<|end|>";
const std::string& BuiltinTinyChatTemplateSource();
std::unique_ptr<ChatTemplate> BuiltinTinyChatTemplate();

}  // namespace tessera::chat
