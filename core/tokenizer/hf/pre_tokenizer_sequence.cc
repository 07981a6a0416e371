// Sequence pre-tokenizer: its children in order, each on the pieces the previous one made.
#include <vector>

#include "core/tokenizer/hf/pre_tokenizer.h"
#include "core/util/status_macros.h"

namespace tessera::hf {

namespace {
class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> children) : children_(std::move(children)) {}
  void PreTokenize(Pieces& pieces) const override {
    for (const auto& c : children_) c->PreTokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> children_;
};
}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeSequencePreTokenizer(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type", "pretokenizers"}, where));
  auto it = node.find("pretokenizers");
  if (it == node.end() || !it->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".pretokenizers must be an array"));
  }
  std::vector<std::unique_ptr<PreTokenizer>> children;
  for (size_t i = 0; i < it->size(); ++i) {
    ASSIGN_OR_RETURN(auto child, CreatePreTokenizer((*it)[i], absl::StrCat(where, ".pretokenizers[", i, "]")));
    children.push_back(std::move(child));
  }
  return std::make_unique<SequencePreTokenizer>(std::move(children));
}

}  // namespace tessera::hf
