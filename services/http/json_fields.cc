#include "services/http/json_fields.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/util/utf8_sanitize.h"
#include "services/http/errors.h"

namespace tessera::services::http {
namespace {

const Json* Find(const Json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status TypeError(const char* key, const std::string& path, const char* want, const Json& got) {
  return FieldError(path.empty() ? key : path, std::string("must be ") + want + ", got " + JsonTypeName(got));
}

}  // namespace

const char* JsonTypeName(const Json& v) {
  switch (v.type()) {
    case Json::value_t::string: return "string";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned: return "integer";
    case Json::value_t::number_float: return "number";
    case Json::value_t::boolean: return "boolean";
    case Json::value_t::array: return "array";
    case Json::value_t::object: return "object";
    case Json::value_t::null: return "null";
    default: return "value";
  }
}

namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

// The path ("messages[0].content", or a key's path + " (key)") of the first string in document order
// that holds U+FFFD, or "".
std::string FirstReplaced(const nlohmann::ordered_json& j, const std::string& path) {
  if (j.is_string()) return j.get_ref<const std::string&>().find(kReplacement) != std::string::npos ? path : "";
  if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) {
      std::string p = FirstReplaced(j[i], absl::StrCat(path, "[", i, "]"));
      if (!p.empty()) return p;
    }
  }
  if (j.is_object()) {
    for (const auto& [key, value] : j.items()) {
      std::string child = path.empty() ? key : absl::StrCat(path, ".", key);
      if (key.find(kReplacement) != std::string::npos) return child;
      std::string p = FirstReplaced(value, child);
      if (!p.empty()) return p;
    }
  }
  return "";
}

}  // namespace

absl::StatusOr<Json> ParseObject(const std::string& body) {
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // JSON text is UTF-8: a body that is JSON once its invalid bytes are replaced gets an error naming the
    // field that held them (exact when the body had no U+FFFD of its own).
    std::string sanitized = Utf8Sanitize(body);
    if (sanitized != body && body.find(kReplacement) == std::string::npos) {
      nlohmann::ordered_json fixed = nlohmann::ordered_json::parse(sanitized, nullptr, /*allow_exceptions=*/false);
      std::string path = fixed.is_discarded() ? "" : FirstReplaced(fixed, "");
      if (!path.empty()) return FieldError(path, "must be valid UTF-8");
    }
    return absl::InvalidArgumentError(
        "We could not parse the JSON body of your request. The body must be a JSON object.");
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(std::string("the request body must be a JSON object, got ") + JsonTypeName(j));
  }
  return j;
}

absl::StatusOr<std::optional<int64_t>> GetInt(const Json& obj, const char* key, const std::string& path) {
  const Json* v = Find(obj, key);
  if (v == nullptr) return std::optional<int64_t>();
  if (v->is_number_unsigned()) {
    uint64_t u = v->get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return TypeError(key, path, "an integer below 2^63", *v);
    return std::optional<int64_t>(static_cast<int64_t>(u));
  }
  if (v->is_number_integer()) return std::optional<int64_t>(v->get<int64_t>());
  if (v->is_number_float()) {
    double d = v->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return std::optional<int64_t>(static_cast<int64_t>(d));
  }
  return TypeError(key, path, "an integer", *v);
}

absl::StatusOr<std::optional<double>> GetNumber(const Json& obj, const char* key, const std::string& path) {
  const Json* v = Find(obj, key);
  if (v == nullptr) return std::optional<double>();
  if (!v->is_number()) return TypeError(key, path, "a number", *v);
  return std::optional<double>(v->get<double>());
}

absl::StatusOr<std::optional<bool>> GetBool(const Json& obj, const char* key, const std::string& path) {
  const Json* v = Find(obj, key);
  if (v == nullptr) return std::optional<bool>();
  if (!v->is_boolean()) return TypeError(key, path, "a boolean", *v);
  return std::optional<bool>(v->get<bool>());
}

absl::StatusOr<std::optional<std::string>> GetString(const Json& obj, const char* key, const std::string& path) {
  const Json* v = Find(obj, key);
  if (v == nullptr) return std::optional<std::string>();
  if (!v->is_string()) return TypeError(key, path, "a string", *v);
  return std::optional<std::string>(v->get<std::string>());
}

absl::StatusOr<std::optional<Json>> GetObject(const Json& obj, const char* key, const std::string& path) {
  const Json* v = Find(obj, key);
  if (v == nullptr) return std::optional<Json>();
  if (!v->is_object()) return TypeError(key, path, "an object", *v);
  return std::optional<Json>(*v);
}

}  // namespace tessera::services::http
