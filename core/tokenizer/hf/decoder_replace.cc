// Replace decoder: in every token, each match of a string or regex pattern replaced by `content`.
#include "core/tokenizer/hf/decoder.h"
#include "core/tokenizer/hf/pattern.h"
#include "core/util/status_macros.h"

namespace tessera::hf {

namespace {
class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(std::unique_ptr<Regex> re, std::string content) : re_(std::move(re)), content_(std::move(content)) {}
  void DecodeChain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) StreamToken(t);
  }
  void StreamToken(std::string& token) const override { token = ReplaceAll(token, *re_, content_); }

 private:
  std::unique_ptr<Regex> re_;
  std::string content_;
};
}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> MakeReplaceDecoder(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type", "pattern", "content"}, where));
  ASSIGN_OR_RETURN(auto re, ParsePattern(node.value("pattern", Json()), where));
  ASSIGN_OR_RETURN(std::string content, GetString(node, "content", where));
  return std::make_unique<ReplaceDecoder>(std::move(re), std::move(content));
}

}  // namespace tessera::hf
