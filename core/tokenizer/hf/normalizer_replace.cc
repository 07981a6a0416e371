// Replace normalizer: every match of a string or regex pattern replaced by `content`.
#include "core/tokenizer/hf/normalizer.h"
#include "core/tokenizer/hf/pattern.h"
#include "core/util/status_macros.h"

namespace tessera::hf {

namespace {
class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<Regex> re, std::string content)
      : re_(std::move(re)), content_(std::move(content)) {}
  void Normalize(std::string& text) const override { text = ReplaceAll(text, *re_, content_); }

 private:
  std::unique_ptr<Regex> re_;
  std::string content_;
};
}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> MakeReplaceNormalizer(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type", "pattern", "content"}, where));
  ASSIGN_OR_RETURN(auto re, ParsePattern(node.value("pattern", Json()), where));
  ASSIGN_OR_RETURN(std::string content, GetString(node, "content", where));
  return std::make_unique<ReplaceNormalizer>(std::move(re), std::move(content));
}

}  // namespace tessera::hf
