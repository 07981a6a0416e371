#include "services/http/chat.h"

#include "absl/strings/str_cat.h"
#include "services/http/errors.h"
#include "services/http/generation.h"
#include "services/http/json_fields.h"
#include "services/http/logprobs.h"

namespace tessera::services::http {
namespace {

constexpr int kMaxMessages = 256;             // as gRPC Generate
constexpr size_t kMaxPromptBytes = 64 << 10;  // roles and contents together

absl::StatusOr<std::string> ReadContent(const Json& m, const std::string& path) {
  auto it = m.find("content");
  if (it == m.end() || it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (!it->is_array()) {
    return FieldError(path, std::string("must be a string or an array of text parts, got ") + JsonTypeName(*it));
  }
  std::string text;
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& part = (*it)[i];
    std::string part_path = absl::StrCat(path, "[", i, "]");
    if (!part.is_object()) return FieldError(part_path, std::string("must be an object, got ") + JsonTypeName(part));
    absl::StatusOr<std::optional<std::string>> type = GetString(part, "type", part_path + ".type");
    if (!type.ok()) return type.status();
    if (type->value_or("") != "text") {
      return FieldError(part_path + ".type", "only \"text\" parts are supported, got \"" + type->value_or("") + "\"");
    }
    absl::StatusOr<std::optional<std::string>> t = GetString(part, "text", part_path + ".text");
    if (!t.ok()) return t.status();
    text += t->value_or("");
  }
  return text;
}

absl::StatusOr<std::vector<ChatMessage>> ReadMessages(const Json& body) {
  auto it = body.find("messages");
  if (it == body.end() || it->is_null()) return FieldError("messages", "you must provide messages");
  if (!it->is_array()) return FieldError("messages", std::string("must be an array, got ") + JsonTypeName(*it));
  if (it->empty()) return FieldError("messages", "must not be empty");
  if (it->size() > kMaxMessages) {
    return FieldError("messages", absl::StrCat("at most ", kMaxMessages, " messages, got ", it->size()));
  }
  std::vector<ChatMessage> out;
  size_t bytes = 0;
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& m = (*it)[i];
    std::string path = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return FieldError(path, std::string("must be an object, got ") + JsonTypeName(m));
    absl::StatusOr<std::optional<std::string>> role = GetString(m, "role", path + ".role");
    if (!role.ok()) return role.status();
    if (!*role || (*role)->empty()) return FieldError(path + ".role", "is required");
    absl::StatusOr<std::string> content = ReadContent(m, path + ".content");
    if (!content.ok()) return content.status();
    bytes += (*role)->size() + content->size();
    out.push_back({**role, *std::move(content)});
  }
  if (bytes > kMaxPromptBytes) {
    return FieldError("messages", absl::StrCat("at most ", kMaxPromptBytes, " bytes, got ", bytes));
  }
  return out;
}

absl::Status ChatComplete(Call& call) {
  absl::StatusOr<Json> body = ParseObject(call.req.body);
  if (!body.ok()) return body.status();
  absl::StatusOr<std::vector<ChatMessage>> messages = ReadMessages(*body);
  if (!messages.ok()) return messages.status();
  absl::StatusOr<CompletionRequest> request = ReadCompletionRequest(call, *body, Endpoint::kChat);
  if (!request.ok()) return request.status();
  request->params.input.messages = *std::move(messages);
  ResponseShape shape;
  shape.id_prefix = "chatcmpl-";
  shape.object = "chat.completion";
  shape.chunk_object = "chat.completion.chunk";
  shape.logprobs = [](const std::vector<TokenLogprob>& tokens, int64_t*) { return ChatLogprobs(tokens); };
  shape.choice = [](const std::string& text, const char* finish, Json logprobs) {
    return Json{{"index", 0},
                {"message", {{"role", "assistant"}, {"content", text}}},
                {"logprobs", std::move(logprobs)},
                {"finish_reason", finish}};
  };
  shape.chunk = [](const std::string& delta, const Json& finish, bool first, Json logprobs) {
    Json d = Json::object();
    if (first) d["role"] = "assistant";
    if (!delta.empty() || (first && finish.is_null())) d["content"] = delta;
    return Json{{"index", 0}, {"delta", d}, {"logprobs", std::move(logprobs)}, {"finish_reason", finish}};
  };
  return ServeCompletion(call, *std::move(request), shape);
}

}  // namespace

void RegisterChat(Router& router) { router.Post("/v1/chat/completions", "/v1/chat/completions", storage::kScopeInference, ChatComplete); }

}  // namespace tessera::services::http
