// OpenAI-style errors for the HTTP API: absl::Status -> HTTP status + the error object
// {"error": {"message", "type", "param", "code"}} that OpenAI's clients parse.
//
// Mapping (as OpenAI uses the codes): INVALID_ARGUMENT / OUT_OF_RANGE / FAILED_PRECONDITION -> 400
// invalid_request_error; UNAUTHENTICATED -> 401 (code invalid_api_key); PERMISSION_DENIED -> 403
// permission_error; NOT_FOUND -> 404 (code model_not_found when the param is "model"); ALREADY_EXISTS ->
// 409; RESOURCE_EXHAUSTED -> 429 rate_limit_error; CANCELLED -> 499; UNIMPLEMENTED -> 501; UNAVAILABLE ->
// 503; DEADLINE_EXCEEDED -> 504; anything else -> 500 server_error.
//
// `param`: the codebase's convention is that a message about one request field starts with that
// field's name ("max_tokens: must be ..."); that prefix becomes `param` (null otherwise).
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace tessera::services::http {

int HttpStatusFor(absl::StatusCode code);
// The field named by the message's "<field>: " prefix, or "" when it names none.
std::string ParamOf(std::string_view message);
nlohmann::json ErrorObject(const absl::Status& status);
// A status whose message names `param` (the prefix ParamOf reads back).
absl::Status FieldError(std::string_view param, std::string_view message);

// Serializes any JSON for the wire: invalid UTF-8 in strings becomes U+FFFD instead of throwing.
std::string Dump(const nlohmann::json& j);

}  // namespace tessera::services::http
