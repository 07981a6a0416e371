// Prepend normalizer: puts `prepend` before any non-empty text.
#include "core/tokenizer/hf/normalizer.h"
#include "core/util/status_macros.h"

namespace tessera::hf {

namespace {
class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void Normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
  }

 private:
  std::string prefix_;
};
}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> MakePrependNormalizer(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type", "prepend"}, where));
  ASSIGN_OR_RETURN(std::string prefix, GetString(node, "prepend", where));
  return std::make_unique<PrependNormalizer>(std::move(prefix));
}

}  // namespace tessera::hf
