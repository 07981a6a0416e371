#include "core/tokenizer/hf/pattern.h"

#include <utility>
#include <vector>

namespace tessera::hf {

absl::StatusOr<std::unique_ptr<Regex>> ParsePattern(const Json& node, const std::string& where) {
  if (node.is_object() && node.size() == 1) {
    if (auto it = node.find("String"); it != node.end() && it->is_string()) {
      return Regex::Literal(it->get<std::string>(), where + ".pattern");
    }
    if (auto it = node.find("Regex"); it != node.end() && it->is_string()) {
      return Regex::Create(it->get<std::string>(), where + ".pattern");
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, ".pattern must be {\"String\": ...} or {\"Regex\": ...}, got ", node.dump()));
}

std::string ReplaceAll(std::string_view text, const Regex& re, std::string_view content) {
  std::vector<std::pair<size_t, size_t>> matches;
  re.FindAll(text, matches);
  if (matches.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size() + matches.size() * content.size());
  size_t prev = 0;
  for (const auto& [s, e] : matches) {
    out.append(text.substr(prev, s - prev));
    out.append(content);
    prev = e;
  }
  out.append(text.substr(prev));
  return out;
}

}  // namespace tessera::hf
