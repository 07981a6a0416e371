// Lowercase normalizer: Rust's char::to_lowercase on every char.
#include "core/tokenizer/hf/normalizer.h"
#include "core/tokenizer/hf/unicode.h"

namespace tessera::hf {

namespace {
class LowercaseNormalizer final : public Normalizer {
 public:
  void Normalize(std::string& text) const override { text = Lowercase(text); }
};
}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> MakeLowercaseNormalizer(const Json& node, const std::string& where) {
  if (auto st = CheckKeys(node, {"type"}, where); !st.ok()) return st;
  return std::make_unique<LowercaseNormalizer>();
}

}  // namespace tessera::hf
