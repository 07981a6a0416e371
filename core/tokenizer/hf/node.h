// Reading tokenizer.json nodes: typed field access whose errors name the node path and field, and the
// type -> factory table lookup every stage registry uses. Unknown fields are refused (a field we do not
// know could change the encoding).
#pragma once

#include <initializer_list>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace tessera::hf {

using Json = nlohmann::json;

absl::Status CheckKeys(const Json& node, std::initializer_list<const char*> allowed, const std::string& where);
absl::StatusOr<std::string> GetString(const Json& node, const char* key, const std::string& where);
// `fallback` when the field is absent or null; an error if absent and no fallback.
absl::StatusOr<bool> GetBool(const Json& node, const char* key, const std::string& where,
                             std::optional<bool> fallback = std::nullopt);
absl::StatusOr<int64_t> GetInt(const Json& node, const char* key, const std::string& where,
                               std::optional<int64_t> fallback = std::nullopt);
// The "type" of a node.
absl::StatusOr<std::string> NodeType(const Json& node, const std::string& where);

// Looks `node`'s type up in a factory table; UNIMPLEMENTED naming the type and the stage if absent.
template <typename T>
struct FactoryEntry {
  const char* type;
  absl::StatusOr<std::unique_ptr<T>> (*make)(const Json& node, const std::string& where);
};
template <typename T, size_t N>
absl::StatusOr<std::unique_ptr<T>> CreateFromTable(const FactoryEntry<T> (&table)[N], const char* stage,
                                                   const Json& node, const std::string& where) {
  auto type = NodeType(node, where);
  if (!type.ok()) return type.status();
  for (const auto& e : table) {
    if (*type == e.type) return e.make(node, absl::StrCat(where, "(", *type, ")"));
  }
  return absl::UnimplementedError(absl::StrCat(where, ": ", stage, " type \"", *type, "\" is not supported"));
}

}  // namespace tessera::hf
