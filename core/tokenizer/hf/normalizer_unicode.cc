// NFC / NFD / NFKC / NFKD normalizers: Unicode normalization forms (utf8proc).
#include "core/tokenizer/hf/normalizer.h"
#include "core/tokenizer/hf/unicode.h"

namespace tessera::hf {

namespace {

class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm form) : form_(form) {}
  void Normalize(std::string& text) const override {
    // ASCII is invariant under every form.
    for (char c : text) {
      if (static_cast<unsigned char>(c) >= 0x80) {
        text = hf::Normalize(text, form_);
        return;
      }
    }
  }

 private:
  NormalForm form_;
};

absl::StatusOr<std::unique_ptr<Normalizer>> Make(const Json& node, const std::string& where, NormalForm form) {
  if (auto st = CheckKeys(node, {"type"}, where); !st.ok()) return st;
  return std::make_unique<UnicodeNormalizer>(form);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> MakeNfcNormalizer(const Json& n, const std::string& w) {
  return Make(n, w, NormalForm::kNfc);
}
absl::StatusOr<std::unique_ptr<Normalizer>> MakeNfdNormalizer(const Json& n, const std::string& w) {
  return Make(n, w, NormalForm::kNfd);
}
absl::StatusOr<std::unique_ptr<Normalizer>> MakeNfkcNormalizer(const Json& n, const std::string& w) {
  return Make(n, w, NormalForm::kNfkc);
}
absl::StatusOr<std::unique_ptr<Normalizer>> MakeNfkdNormalizer(const Json& n, const std::string& w) {
  return Make(n, w, NormalForm::kNfkd);
}

}  // namespace tessera::hf
