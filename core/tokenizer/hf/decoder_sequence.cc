// Sequence decoder: its children in order, each on the token list the previous one produced.
#include "core/tokenizer/hf/decoder.h"
#include "core/util/status_macros.h"

namespace tessera::hf {

namespace {
class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> children) : children_(std::move(children)) {}
  void DecodeChain(std::vector<std::string>& tokens) const override {
    for (const auto& c : children_) c->DecodeChain(tokens);
  }
  void StreamToken(std::string& token) const override {
    for (const auto& c : children_) c->StreamToken(token);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> children_;
};
}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> MakeSequenceDecoder(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type", "decoders"}, where));
  auto it = node.find("decoders");
  if (it == node.end() || !it->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".decoders must be an array"));
  }
  std::vector<std::unique_ptr<Decoder>> children;
  for (size_t i = 0; i < it->size(); ++i) {
    ASSIGN_OR_RETURN(auto child, CreateDecoder((*it)[i], absl::StrCat(where, ".decoders[", i, "]")));
    children.push_back(std::move(child));
  }
  return std::make_unique<SequenceDecoder>(std::move(children));
}

}  // namespace tessera::hf
