// ChatTemplate: transformers' apply_chat_template inputs around the jinja interpreter (see header).
#include "core/chat/chat_template.h"

#include <chrono>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/chat/jinja_eval.h"
#include "core/chat/jinja_parser.h"
#include "core/util/status_macros.h"

namespace tessera::chat {
namespace {

using jinja::Value;

std::tm LocalNow() {
  std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  localtime_r(&t, &tm);
  return tm;
}

// JSON integers beyond int64 would need Python's unbounded ints: refused rather than rounded.
absl::Status CheckIntegers(const nlohmann::ordered_json& j, const std::string& where) {
  if (j.is_number_unsigned() && j.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": integer ", j.dump(), " is beyond 64 bits"));
  }
  if (j.is_array() || j.is_object()) {
    for (const auto& e : j) RETURN_IF_ERROR(CheckIntegers(e, where));
  }
  return absl::OkStatus();
}

// transformers' _normalize_chat_messages + _alias_reasoning_fields.
absl::StatusOr<Value> PrepareMessages(const nlohmann::ordered_json& messages) {
  if (!messages.is_array()) return absl::InvalidArgumentError("messages must be a JSON array of message objects");
  if (messages.empty()) {
    return absl::InvalidArgumentError("Cannot apply chat template to an empty conversation. Provide at least one message.");
  }
  jinja::List out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    if (!m.is_object()) return absl::InvalidArgumentError(absl::StrCat("messages[", i, "]: a message must be a JSON object"));
    nlohmann::ordered_json clean = nlohmann::ordered_json::object();
    for (auto it = m.begin(); it != m.end(); ++it) {
      if (!it->is_null()) clean[it.key()] = *it;
    }
    const nlohmann::ordered_json* reasoning = nullptr;
    for (const char* key : {"reasoning_content", "thinking", "reasoning"}) {
      if (clean.contains(key)) {
        reasoning = &clean[key];
        break;
      }
    }
    if (reasoning) {
      // {"thinking": r, **message, "reasoning_content": r}: thinking goes first unless already present.
      nlohmann::ordered_json r = *reasoning;
      nlohmann::ordered_json aliased = nlohmann::ordered_json::object();
      aliased["thinking"] = r;
      for (auto it = clean.begin(); it != clean.end(); ++it) aliased[it.key()] = *it;
      aliased["reasoning_content"] = r;
      clean = std::move(aliased);
    }
    out.push_back(jinja::FromJson(clean));
  }
  return Value::MakeList(std::move(out));
}

}  // namespace

ChatTemplate::ChatTemplate(std::string source, std::shared_ptr<const jinja::Program> program)
    : source_(std::move(source)), program_(std::move(program)) {}
ChatTemplate::~ChatTemplate() = default;

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Create(std::string source) {
  absl::StatusOr<std::unique_ptr<jinja::Program>> program = jinja::Parse(source);
  if (!program.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("chat template: ", program.status().message()));
  }
  std::shared_ptr<const jinja::Program> shared(std::move(*program));
  return std::unique_ptr<ChatTemplate>(new ChatTemplate(std::move(source), std::move(shared)));
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::json& messages, const ChatRenderOptions& opts) const {
  return Render(nlohmann::ordered_json::parse(messages.dump()), opts);
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& messages,
                                                 const ChatRenderOptions& opts) const {
  RETURN_IF_ERROR(CheckIntegers(messages, "messages"));
  RETURN_IF_ERROR(CheckIntegers(opts.extra, "extra"));
  RETURN_IF_ERROR(CheckIntegers(opts.tools, "tools"));
  RETURN_IF_ERROR(CheckIntegers(opts.documents, "documents"));
  ASSIGN_OR_RETURN(Value msgs, PrepareMessages(messages));
  if (!opts.extra.is_object()) return absl::InvalidArgumentError("extra template variables must be a JSON object");
  std::vector<std::pair<std::string, Value>> vars;
  if (opts.bos_token) vars.emplace_back("bos_token", Value::Str(*opts.bos_token));
  if (opts.eos_token) vars.emplace_back("eos_token", Value::Str(*opts.eos_token));
  for (auto it = opts.extra.begin(); it != opts.extra.end(); ++it) vars.emplace_back(it.key(), jinja::FromJson(*it));
  vars.emplace_back("messages", std::move(msgs));
  vars.emplace_back("tools", jinja::FromJson(opts.tools));
  vars.emplace_back("documents", jinja::FromJson(opts.documents));
  vars.emplace_back("add_generation_prompt", Value::Bool(opts.add_generation_prompt));
  jinja::BuiltinEnv env;
  env.now = opts.now ? opts.now : LocalNow;
  return jinja::RenderProgram(*program_, vars, env);
}

absl::StatusOr<std::vector<ChatSegment>> ChatTemplate::RenderForTraining(const nlohmann::ordered_json& messages,
                                                                         const ChatRenderOptions& opts) const {
  if (!messages.is_array() || messages.empty()) {
    return absl::InvalidArgumentError("messages must be a non-empty JSON array");
  }
  bool any_loss = false;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    std::string where = absl::StrCat("messages[", i, "]: ");
    if (!m.is_object()) return absl::InvalidArgumentError(where + "a message must be a JSON object");
    if (!m.contains("role") || !m["role"].is_string()) return absl::InvalidArgumentError(where + "missing string \"role\"");
    const std::string role = m["role"].get<std::string>();
    if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
      return absl::InvalidArgumentError(absl::StrCat(where, "unknown role \"", role, "\" (expected system, user, assistant or tool)"));
    }
    if (!m.contains("content") || !m["content"].is_string()) {
      return absl::InvalidArgumentError(where + "\"content\" must be a string");
    }
    if (m.contains("weight")) {
      if (role != "assistant") return absl::InvalidArgumentError(where + "\"weight\" is only allowed on assistant messages");
      const auto& w = m["weight"];
      if (!w.is_number_integer() || (w.get<int64_t>() != 0 && w.get<int64_t>() != 1)) {
        return absl::InvalidArgumentError(where + "\"weight\" must be 0 or 1");
      }
    }
    if (role == "assistant") {
      if (i == 0) return absl::InvalidArgumentError(where + "a conversation cannot start with an assistant message");
      any_loss |= !m.contains("weight") || m["weight"].get<int64_t>() != 0;
    }
  }
  if (!any_loss) return absl::InvalidArgumentError("no assistant message to train on (all have weight 0 or none exists)");

  // "weight" is ours, not the template's: strip it before rendering.
  nlohmann::ordered_json clean = messages;
  for (auto& m : clean) m.erase("weight");

  std::vector<ChatSegment> segments;
  auto push = [&](std::string text, bool loss) {
    if (text.empty()) return;
    if (!segments.empty() && segments.back().loss == loss) {
      segments.back().text += text;
    } else {
      segments.push_back({std::move(text), loss});
    }
  };
  auto not_stable = [](size_t i, const std::string& what) {
    return absl::FailedPreconditionError(absl::StrCat(
        "chat template is not prefix-stable at messages[", i, "]: ", what,
        "; the assistant turns cannot be located for a loss mask with this template"));
  };
  std::string emitted;
  ChatRenderOptions o = opts;
  for (size_t i = 0; i < clean.size(); ++i) {
    if (clean[i]["role"] != "assistant") continue;
    nlohmann::ordered_json head(nlohmann::ordered_json::value_t::array);
    for (size_t k = 0; k < i; ++k) head.push_back(clean[k]);
    o.add_generation_prompt = true;
    ASSIGN_OR_RETURN(std::string prefix, Render(head, o));
    head.push_back(clean[i]);
    o.add_generation_prompt = false;
    ASSIGN_OR_RETURN(std::string upto, Render(head, o));
    if (!absl::StartsWith(prefix, emitted)) {
      return not_stable(i, "the rendering of the earlier messages changes when this one follows");
    }
    if (!absl::StartsWith(upto, prefix)) {
      return not_stable(i, "the rendering with add_generation_prompt=true is not a prefix of the rendering with the "
                           "assistant message");
    }
    push(prefix.substr(emitted.size()), false);
    bool loss = !messages[i].contains("weight") || messages[i]["weight"].get<int64_t>() != 0;
    push(upto.substr(prefix.size()), loss);
    emitted = std::move(upto);
  }
  o.add_generation_prompt = false;
  ASSIGN_OR_RETURN(std::string full, Render(clean, o));
  if (!absl::StartsWith(full, emitted)) {
    return not_stable(clean.size() - 1, "the whole conversation renders the earlier assistant turns differently");
  }
  push(full.substr(emitted.size()), false);
  return segments;
}

const std::string& BuiltinTinyChatTemplateSource() {
  static const std::string* s = new std::string(
      "{%- for message in messages %}\n"
      "{%- if message['role'] not in ['system', 'user', 'assistant'] %}\n"
      "{{- raise_exception('builtin:tiny chat: role must be system, user or assistant, not ' ~ message['role']) }}\n"
      "{%- endif %}\n"
      "{%- if message['content'] is not string %}\n"
      "{{- raise_exception('builtin:tiny chat: message content must be a string') }}\n"
      "{%- endif %}\n"
      "{{- '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}\n"
      "{%- endfor %}\n"
      "{%- if add_generation_prompt %}\n"
      "{{- '<|assistant|>\\n' }}\n"
      "{%- endif %}\n");
  return *s;
}

std::unique_ptr<ChatTemplate> BuiltinTinyChatTemplate() {
  absl::StatusOr<std::unique_ptr<ChatTemplate>> t = ChatTemplate::Create(BuiltinTinyChatTemplateSource());
  // The source is a constant checked by the tests; failing here is a programming error.
  if (!t.ok()) std::abort();
  return *std::move(t);
}

}  // namespace tessera::chat
