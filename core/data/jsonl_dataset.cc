#include "core/data/jsonl_dataset.h"

#include <algorithm>
#include <exception>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace tessera::data {
namespace {

using json = nlohmann::ordered_json;

absl::Status LineError(int64_t line, std::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", std::string(reason)));
}

bool IsBlank(std::string_view s) {
  for (char c : s) {
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') return false;
  }
  return true;
}

// The string field `key` of `obj`, or an error naming it.
absl::StatusOr<std::string> StringField(const json& obj, const char* key, int64_t line) {
  const json& v = obj.at(key);
  if (!v.is_string()) {
    return LineError(line, absl::StrCat("field \"", key, "\" must be a string, got ", v.type_name()));
  }
  return v.get<std::string>();
}

enum class LineKind { kText, kPromptCompletion, kChat };

absl::StatusOr<TokenizedExample> ParseLine(std::string_view line, int64_t line_no, const Tokenizer& tokenizer,
                                           const DatasetChat* chat, LineKind& kind) {
  json obj;
  try {
    obj = json::parse(line.begin(), line.end());
  } catch (const json::exception& e) {
    // Any parser exception, not only parse_error: a number beyond double ("-1e999") throws out_of_range
    // (it escaped here and terminated the server on an upload). e.what() is
    // "[json.exception.parse_error.101] parse error at line 1, column 5: ..." or
    // "[json.exception.out_of_range.406] number overflow parsing '-1e999'".
    std::string what = e.what();
    size_t pos = what.find("column");
    if (pos == std::string::npos && what.find("] ") != std::string::npos) pos = what.find("] ") + 2;
    return LineError(line_no, absl::StrCat("invalid JSON (", pos == std::string::npos ? what
                                                                                       : what.substr(pos),
                                           ")"));
  }
  if (!obj.is_object()) {
    return LineError(line_no, absl::StrCat("expected a JSON object, got ", obj.type_name()));
  }
  if (obj.contains("messages")) {
    if (obj.size() != 1) {
      return LineError(line_no, "\"messages\" cannot be combined with other fields");
    }
    if (!obj["messages"].is_array() || obj["messages"].empty()) {
      return LineError(line_no, "field \"messages\" must be a non-empty array of {\"role\", \"content\"}");
    }
    if (chat == nullptr || chat->chat_template == nullptr) {
      return LineError(line_no, "\"messages\" needs a chat template, and this backbone has none");
    }
    kind = LineKind::kChat;
    absl::StatusOr<TokenizedExample> ex = TokenizeChat(obj["messages"], tokenizer, *chat);
    if (!ex.ok()) return LineError(line_no, std::string(ex.status().message()));
    return ex;
  }
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (it.key() != "text" && it.key() != "prompt" && it.key() != "completion") {
      return LineError(line_no, absl::StrCat("unknown field \"", it.key(),
                                             "\" (expected \"text\", \"prompt\"+\"completion\" or \"messages\")"));
    }
  }
  const bool has_text = obj.contains("text");
  const bool has_prompt = obj.contains("prompt");
  const bool has_completion = obj.contains("completion");
  if (has_text && (has_prompt || has_completion)) {
    return LineError(line_no, "\"text\" cannot be combined with \"prompt\"/\"completion\"");
  }
  if (has_text) {
    auto text = StringField(obj, "text", line_no);
    if (!text.ok()) return text.status();
    if (text->empty()) return LineError(line_no, "field \"text\" is empty");
    kind = LineKind::kText;
    return TokenizeText(*text, tokenizer);
  }
  if (!has_prompt && !has_completion) {
    return LineError(line_no, "missing field: expected \"text\", \"prompt\"+\"completion\" or \"messages\"");
  }
  if (!has_completion) return LineError(line_no, "missing field \"completion\"");
  if (!has_prompt) return LineError(line_no, "missing field \"prompt\"");
  auto prompt = StringField(obj, "prompt", line_no);
  if (!prompt.ok()) return prompt.status();
  auto completion = StringField(obj, "completion", line_no);
  if (!completion.ok()) return completion.status();
  if (completion->empty()) return LineError(line_no, "field \"completion\" is empty");
  kind = LineKind::kPromptCompletion;
  return TokenizePromptCompletion(*prompt, *completion, tokenizer);
}

}  // namespace

TokenizedExample TokenizePromptCompletion(std::string_view prompt, std::string_view completion,
                                          const Tokenizer& tokenizer) {
  TokenizedExample ex;
  if (tokenizer.bos_id() >= 0) ex.tokens.push_back(tokenizer.bos_id());
  for (int32_t t : tokenizer.Encode(prompt)) ex.tokens.push_back(t);
  ex.prompt_tokens = static_cast<int64_t>(ex.tokens.size());
  ex.loss_mask.assign(ex.tokens.size(), 0);
  for (int32_t t : tokenizer.Encode(completion)) ex.tokens.push_back(t);
  if (tokenizer.eos_id() >= 0) ex.tokens.push_back(tokenizer.eos_id());
  ex.loss_mask.resize(ex.tokens.size(), 1);
  return ex;
}

TokenizedExample TokenizeText(std::string_view text, const Tokenizer& tokenizer) {
  TokenizedExample ex;
  if (tokenizer.bos_id() >= 0) ex.tokens.push_back(tokenizer.bos_id());
  for (int32_t t : tokenizer.Encode(text)) ex.tokens.push_back(t);
  if (tokenizer.eos_id() >= 0) ex.tokens.push_back(tokenizer.eos_id());
  ex.prompt_tokens = 1;
  ex.loss_mask.assign(ex.tokens.size(), 1);
  ex.loss_mask[0] = 0;  // the first token has nothing before it to be predicted from
  return ex;
}

absl::StatusOr<TokenizedExample> TokenizeChat(const nlohmann::ordered_json& messages, const Tokenizer& tokenizer,
                                              const DatasetChat& chat) {
  absl::StatusOr<std::vector<chat::ChatSegment>> segments =
      chat.chat_template->RenderForTraining(messages, chat.options);
  if (!segments.ok()) return absl::InvalidArgumentError(std::string(segments.status().message()));
  // The model is served the whole rendering tokenized at once, so it trains on exactly those tokens
  // (tokenizing segment by segment would differ where a merge or a Metaspace prefix spans a boundary).
  // Segment i starts at the token where the tokenization of the text before it stops agreeing with the
  // whole one: exact when the boundary is a token boundary, else the straddling token goes to the later
  // segment.
  std::string text;
  std::vector<size_t> starts;
  for (const chat::ChatSegment& seg : *segments) {
    starts.push_back(text.size());
    text += seg.text;
  }
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer.EncodeText(text, /*add_special_tokens=*/false);
  if (!ids.ok()) return ids.status();
  std::vector<size_t> first_token(segments->size() + 1, ids->size());
  for (size_t i = 0; i < segments->size(); ++i) {
    if (starts[i] == 0) {
      first_token[i] = 0;
      continue;
    }
    absl::StatusOr<std::vector<int32_t>> prefix =
        tokenizer.EncodeText(std::string_view(text).substr(0, starts[i]), /*add_special_tokens=*/false);
    if (!prefix.ok()) return prefix.status();
    size_t k = 0;
    while (k < prefix->size() && k < ids->size() && (*prefix)[k] == (*ids)[k]) ++k;
    first_token[i] = std::max(k, i > 0 ? first_token[i - 1] : 0);
  }
  TokenizedExample ex;
  if (chat.prepend_bos && tokenizer.bos_id() >= 0) {
    ex.tokens.push_back(tokenizer.bos_id());
    ex.loss_mask.push_back(0);
  }
  bool any_loss = false;
  for (size_t i = 0; i < segments->size(); ++i) {
    const bool loss = (*segments)[i].loss;
    if (!loss && !any_loss) ex.prompt_tokens = static_cast<int64_t>(ex.tokens.size() + first_token[i + 1] - first_token[i]);
    for (size_t j = first_token[i]; j < first_token[i + 1]; ++j) {
      ex.tokens.push_back((*ids)[j]);
      ex.loss_mask.push_back(loss ? 1 : 0);
    }
    any_loss |= loss && first_token[i + 1] > first_token[i];
  }
  if (!any_loss) {
    return absl::InvalidArgumentError(
        "the conversation has no assistant message to train on (each needs \"weight\": 1 or no weight)");
  }
  // The first token has nothing before it to be predicted from.
  if (!ex.loss_mask.empty()) ex.loss_mask[0] = 0;
  return ex;
}

absl::StatusOr<ParsedDataset> ParseJsonlDataset(std::string_view bytes, const Tokenizer& tokenizer,
                                                const DatasetLimits& limits, const DatasetChat* chat) {
  if (bytes.size() > limits.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("dataset is ", bytes.size(),
                                                     " bytes, over the limit of ", limits.max_bytes));
  }
  ParsedDataset out;
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t end = bytes.find('\n', pos);
    if (end == std::string_view::npos) end = bytes.size();
    std::string_view line = bytes.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (IsBlank(line)) continue;
    LineKind kind = LineKind::kText;
    auto ex = ParseLine(line, line_no, tokenizer, chat, kind);
    if (!ex.ok()) return ex.status();
    const int64_t n = static_cast<int64_t>(ex->tokens.size());
    if (n > limits.max_tokens_per_example) {
      return LineError(line_no, absl::StrCat("example has ", n, " tokens, over the limit of ",
                                             limits.max_tokens_per_example));
    }
    if (static_cast<int64_t>(out.examples.size()) >= limits.max_examples) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "line ", line_no, ": dataset has more than ", limits.max_examples, " examples"));
    }
    out.num_tokens += n;
    for (uint8_t m : ex->loss_mask) out.num_loss_tokens += m;
    ++(kind == LineKind::kText ? out.num_text : kind == LineKind::kChat ? out.num_chat : out.num_prompt_completion);
    out.examples.push_back(*std::move(ex));
  }
  if (static_cast<int64_t>(out.examples.size()) < limits.min_examples) {
    return absl::InvalidArgumentError(absl::StrCat("dataset has ", out.examples.size(),
                                                   " examples, at least ", limits.min_examples,
                                                   " required"));
  }
  return out;
}

std::string ExamplesToJsonl(const std::vector<Example>& examples) {
  std::string out;
  for (const Example& e : examples) {
    out += json{{"prompt", e.prompt}, {"completion", e.completion}}.dump();
    out += '\n';
  }
  return out;
}

std::string TextsToJsonl(const std::vector<std::string>& texts) {
  std::string out;
  for (const std::string& t : texts) {
    out += json{{"text", t}}.dump();
    out += '\n';
  }
  return out;
}

}  // namespace tessera::data
