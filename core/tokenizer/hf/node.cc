#include "core/tokenizer/hf/node.h"

namespace tessera::hf {

absl::Status CheckKeys(const Json& node, std::initializer_list<const char*> allowed, const std::string& where) {
  if (!node.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, ": expected an object"));
  for (auto it = node.begin(); it != node.end(); ++it) {
    bool known = false;
    for (const char* a : allowed) known = known || it.key() == a;
    if (!known) {
      return absl::UnimplementedError(absl::StrCat(where, ": field \"", it.key(), "\" is not supported"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> GetString(const Json& node, const char* key, const std::string& where) {
  auto it = node.find(key);
  if (it == node.end() || !it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, " must be a string"));
  }
  return it->get<std::string>();
}

absl::StatusOr<bool> GetBool(const Json& node, const char* key, const std::string& where,
                             std::optional<bool> fallback) {
  auto it = node.find(key);
  if ((it == node.end() || it->is_null()) && fallback.has_value()) return *fallback;
  if (it == node.end() || !it->is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, " must be true or false"));
  }
  return it->get<bool>();
}

absl::StatusOr<int64_t> GetInt(const Json& node, const char* key, const std::string& where,
                               std::optional<int64_t> fallback) {
  auto it = node.find(key);
  if ((it == node.end() || it->is_null()) && fallback.has_value()) return *fallback;
  if (it == node.end() || !it->is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, " must be an integer"));
  }
  return it->get<int64_t>();
}

absl::StatusOr<std::string> NodeType(const Json& node, const std::string& where) {
  if (!node.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, ": expected an object"));
  return GetString(node, "type", where);
}

}  // namespace tessera::hf
