#include "core/data/jsonl_dataset.h"

#include <exception>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace tessera::data {
namespace {

using json = nlohmann::json;

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

absl::StatusOr<TokenizedExample> ParseLine(std::string_view line, int64_t line_no,
                                           const Tokenizer& tokenizer, bool& is_text) {
  json obj;
  try {
    obj = json::parse(line.begin(), line.end());
  } catch (const json::parse_error& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line 1, column 5: ...".
    std::string what = e.what();
    size_t pos = what.find("column");
    return LineError(line_no, absl::StrCat("invalid JSON (", pos == std::string::npos ? what
                                                                                       : what.substr(pos),
                                           ")"));
  }
  if (!obj.is_object()) {
    return LineError(line_no, absl::StrCat("expected a JSON object, got ", obj.type_name()));
  }
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (it.key() != "text" && it.key() != "prompt" && it.key() != "completion") {
      return LineError(line_no, absl::StrCat("unknown field \"", it.key(),
                                             "\" (expected \"text\" or \"prompt\"+\"completion\")"));
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
    is_text = true;
    return TokenizeText(*text, tokenizer);
  }
  if (!has_prompt && !has_completion) {
    return LineError(line_no, "missing field: expected \"text\" or \"prompt\"+\"completion\"");
  }
  if (!has_completion) return LineError(line_no, "missing field \"completion\"");
  if (!has_prompt) return LineError(line_no, "missing field \"prompt\"");
  auto prompt = StringField(obj, "prompt", line_no);
  if (!prompt.ok()) return prompt.status();
  auto completion = StringField(obj, "completion", line_no);
  if (!completion.ok()) return completion.status();
  if (completion->empty()) return LineError(line_no, "field \"completion\" is empty");
  is_text = false;
  return TokenizePromptCompletion(*prompt, *completion, tokenizer);
}

}  // namespace

TokenizedExample TokenizePromptCompletion(std::string_view prompt, std::string_view completion,
                                          const Tokenizer& tokenizer) {
  TokenizedExample ex;
  ex.tokens.push_back(tokenizer.bos_id());
  for (int32_t t : tokenizer.Encode(prompt)) ex.tokens.push_back(t);
  ex.prompt_tokens = static_cast<int64_t>(ex.tokens.size());
  ex.loss_mask.assign(ex.tokens.size(), 0);
  for (int32_t t : tokenizer.Encode(completion)) ex.tokens.push_back(t);
  ex.tokens.push_back(tokenizer.eos_id());
  ex.loss_mask.resize(ex.tokens.size(), 1);
  return ex;
}

TokenizedExample TokenizeText(std::string_view text, const Tokenizer& tokenizer) {
  TokenizedExample ex;
  ex.tokens.push_back(tokenizer.bos_id());
  for (int32_t t : tokenizer.Encode(text)) ex.tokens.push_back(t);
  ex.tokens.push_back(tokenizer.eos_id());
  ex.prompt_tokens = 1;
  ex.loss_mask.assign(ex.tokens.size(), 1);
  ex.loss_mask[0] = 0;
  return ex;
}

absl::StatusOr<ParsedDataset> ParseJsonlDataset(std::string_view bytes, const Tokenizer& tokenizer,
                                                const DatasetLimits& limits) {
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
    bool is_text = false;
    auto ex = ParseLine(line, line_no, tokenizer, is_text);
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
    ++(is_text ? out.num_text : out.num_prompt_completion);
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
