// Sequence normalizer: its children in order.
#include <vector>

#include "core/tokenizer/hf/normalizer.h"
#include "core/util/status_macros.h"

namespace tessera::hf {

namespace {
class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> children) : children_(std::move(children)) {}
  void Normalize(std::string& text) const override {
    for (const auto& c : children_) c->Normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> children_;
};
}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> MakeSequenceNormalizer(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type", "normalizers"}, where));
  auto it = node.find("normalizers");
  if (it == node.end() || !it->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".normalizers must be an array"));
  }
  std::vector<std::unique_ptr<Normalizer>> children;
  for (size_t i = 0; i < it->size(); ++i) {
    ASSIGN_OR_RETURN(auto child, CreateNormalizer((*it)[i], absl::StrCat(where, ".normalizers[", i, "]")));
    children.push_back(std::move(child));
  }
  return std::make_unique<SequenceNormalizer>(std::move(children));
}

}  // namespace tessera::hf
