// TemplateProcessing: the `single` template, e.g. [<s>, $A, </s>], with each special token's ids from
// `special_tokens`. (Pair templates are validated but not used: Tessera encodes single sequences.)
#include "core/tokenizer/hf/post_processor.h"
#include "core/util/status_macros.h"

namespace tessera::hf {

namespace {

class TemplateProcessing final : public PostProcessor {
 public:
  // Each element: the ids of a special token, or an empty optional for the sequence.
  explicit TemplateProcessing(std::vector<std::optional<std::vector<int32_t>>> single) : single_(std::move(single)) {}
  void Process(std::vector<int32_t>& ids) const override {
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    for (const auto& part : single_) {
      if (part) {
        out.insert(out.end(), part->begin(), part->end());
      } else {
        out.insert(out.end(), ids.begin(), ids.end());
      }
    }
    ids.swap(out);
  }

 private:
  std::vector<std::optional<std::vector<int32_t>>> single_;
};

absl::StatusOr<std::vector<std::optional<std::vector<int32_t>>>> ParseTemplate(const Json& node, const char* key,
                                                                               const Json& specials,
                                                                               const std::string& where) {
  auto it = node.find(key);
  if (it == node.end() || !it->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, " must be an array"));
  }
  std::vector<std::optional<std::vector<int32_t>>> parts;
  for (size_t k = 0; k < it->size(); ++k) {
    const Json& e = (*it)[k];
    const std::string here = absl::StrCat(where, ".", key, "[", k, "]");
    if (e.is_object() && e.contains("Sequence") && e["Sequence"].is_object()) {
      const std::string id = e["Sequence"].value("id", "");
      if (id != "A" && (std::string(key) == "single" || id != "B")) {
        return absl::InvalidArgumentError(absl::StrCat(here, ": sequence id \"", id, "\" is not supported"));
      }
      parts.emplace_back(std::nullopt);
    } else if (e.is_object() && e.contains("SpecialToken") && e["SpecialToken"].is_object()) {
      const std::string id = e["SpecialToken"].value("id", "");
      auto sp = specials.find(id);
      if (sp == specials.end() || !sp->is_object() || !sp->contains("ids") || !(*sp)["ids"].is_array()) {
        return absl::InvalidArgumentError(absl::StrCat(here, ": special token \"", id, "\" is not in special_tokens"));
      }
      std::vector<int32_t> ids;
      for (const Json& v : (*sp)["ids"]) {
        if (!v.is_number_integer()) return absl::InvalidArgumentError(absl::StrCat(here, ": ids must be integers"));
        ids.push_back(v.get<int32_t>());
      }
      parts.emplace_back(std::move(ids));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(here, ": expected {\"Sequence\":..} or {\"SpecialToken\":..}"));
    }
  }
  return parts;
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostProcessor>> MakeTemplateProcessing(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type", "single", "pair", "special_tokens"}, where));
  const Json specials = node.value("special_tokens", Json::object());
  ASSIGN_OR_RETURN(auto single, ParseTemplate(node, "single", specials, where));
  if (node.contains("pair")) {
    ASSIGN_OR_RETURN(auto pair, ParseTemplate(node, "pair", specials, where));
    (void)pair;
  }
  return std::make_unique<TemplateProcessing>(std::move(single));
}

}  // namespace tessera::hf
