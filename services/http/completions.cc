#include "services/http/completions.h"

#include "absl/strings/str_cat.h"
#include "services/http/errors.h"
#include "services/http/generation.h"
#include "services/http/json_fields.h"
#include "services/http/logprobs.h"

namespace tessera::services::http {
namespace {

constexpr size_t kMaxPromptBytes = 64 << 10;  // as gRPC Generate

absl::StatusOr<std::string> ReadPrompt(const Json& body) {
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) return FieldError("prompt", "you must provide a prompt");
  const Json* p = &*it;
  if (p->is_array()) {
    if (p->size() != 1) {
      return FieldError("prompt", absl::StrCat("only one prompt per request is supported, got ", p->size()));
    }
    p = &(*p)[0];
    if (!p->is_string()) {
      return FieldError("prompt", std::string("token-id prompts are not supported; send a string, got ") +
                                      JsonTypeName(*p) + " in the array");
    }
  }
  if (!p->is_string()) return FieldError("prompt", std::string("must be a string, got ") + JsonTypeName(*p));
  std::string prompt = p->get<std::string>();
  if (prompt.empty()) return FieldError("prompt", "must not be empty");
  if (prompt.size() > kMaxPromptBytes) {
    return FieldError("prompt", absl::StrCat("at most ", kMaxPromptBytes, " bytes, got ", prompt.size()));
  }
  return prompt;
}

absl::Status Complete(Call& call) {
  absl::StatusOr<Json> body = ParseObject(call.req.body);
  if (!body.ok()) return body.status();
  absl::StatusOr<std::string> prompt = ReadPrompt(*body);
  if (!prompt.ok()) return prompt.status();
  absl::StatusOr<CompletionRequest> request = ReadCompletionRequest(call, *body, Endpoint::kCompletions);
  if (!request.ok()) return request.status();
  request->params.input.text = *std::move(prompt);
  ResponseShape shape;
  shape.id_prefix = "cmpl-";
  shape.object = "text_completion";
  shape.chunk_object = "text_completion";
  shape.logprobs = LegacyLogprobs;
  shape.choice = [](const std::string& text, const char* finish, Json logprobs) {
    return Json{{"index", 0}, {"text", text}, {"logprobs", std::move(logprobs)}, {"finish_reason", finish}};
  };
  shape.chunk = [](const std::string& delta, const Json& finish, bool, Json logprobs) {
    return Json{{"index", 0}, {"text", delta}, {"logprobs", std::move(logprobs)}, {"finish_reason", finish}};
  };
  return ServeCompletion(call, *std::move(request), shape);
}

}  // namespace

void RegisterCompletions(Router& router) { router.Post("/v1/completions", "/v1/completions", storage::kScopeInference, Complete); }

}  // namespace tessera::services::http
