// Typed reads of request JSON fields, with errors OpenAI's way: a field of the wrong type is a 400 whose
// message starts with the field's path ("max_tokens: must be an integer, got string"), so errors.h
// turns it into `param`. Absent and null fields read as nullopt (OpenAI treats null as "not given");
// unknown fields are never looked at, so they are ignored as OpenAI ignores them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tessera::services::http {

using Json = nlohmann::json;

// The request body as a JSON object (400 for malformed JSON or a non-object).
absl::StatusOr<Json> ParseObject(const std::string& body);

// `path` names the field in errors; "" = `key`.
absl::StatusOr<std::optional<int64_t>> GetInt(const Json& obj, const char* key, const std::string& path = "");
absl::StatusOr<std::optional<double>> GetNumber(const Json& obj, const char* key, const std::string& path = "");
absl::StatusOr<std::optional<bool>> GetBool(const Json& obj, const char* key, const std::string& path = "");
absl::StatusOr<std::optional<std::string>> GetString(const Json& obj, const char* key,
                                                     const std::string& path = "");
// An object field (nullopt when absent/null).
absl::StatusOr<std::optional<Json>> GetObject(const Json& obj, const char* key, const std::string& path = "");

// "string", "integer", "number", "boolean", "array", "object", "null": for messages.
const char* JsonTypeName(const Json& v);

}  // namespace tessera::services::http
