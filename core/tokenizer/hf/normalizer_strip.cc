// Strip normalizer: removes White_Space chars at the left and/or right end.
#include "core/tokenizer/hf/normalizer.h"
#include "core/tokenizer/hf/unicode.h"
#include "core/util/status_macros.h"

namespace tessera::hf {

namespace {
class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void Normalize(std::string& text) const override {
    size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end) {
        size_t i = begin;
        if (!IsWhitespace(NextCodePoint(text, i))) break;
        begin = i;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        size_t i = start;
        if (!IsWhitespace(NextCodePoint(text, i))) break;
        end = start;
      }
    }
    text = text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};
}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> MakeStripNormalizer(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type", "strip_left", "strip_right"}, where));
  ASSIGN_OR_RETURN(bool left, GetBool(node, "strip_left", where));
  ASSIGN_OR_RETURN(bool right, GetBool(node, "strip_right", where));
  return std::make_unique<StripNormalizer>(left, right);
}

}  // namespace tessera::hf
