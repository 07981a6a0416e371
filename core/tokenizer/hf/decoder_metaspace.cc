// Metaspace decoder: the replacement char becomes ' ', except in the first token, where it is dropped
// (unless prepend_scheme is "never"), undoing the space the pre-tokenizer put in front.
#include "core/tokenizer/hf/decoder.h"
#include "core/tokenizer/hf/unicode.h"
#include "core/util/status_macros.h"

namespace tessera::hf {

absl::Status ParseMetaspace(const Json& node, const std::string& where, char32_t& replacement, int& prepend,
                            bool& split);

namespace {
constexpr int kNever = 2;  // the Prepend enum of pre_tokenizer_metaspace.cc: always, first, never

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(char32_t replacement, bool strip_first) : replacement_(replacement), strip_first_(strip_first) {}
  void DecodeChain(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) tokens[k] = Map(tokens[k], k == 0 && strip_first_);
  }
  void StreamToken(std::string& token) const override { token = Map(token, false); }

 private:
  std::string Map(const std::string& t, bool drop) const {
    std::string out;
    out.reserve(t.size());
    size_t i = 0;
    while (i < t.size()) {
      const size_t b = i;
      if (NextCodePoint(t, i) == replacement_) {
        if (!drop) out.push_back(' ');
      } else {
        out.append(t, b, i - b);
      }
    }
    return out;
  }
  char32_t replacement_;
  bool strip_first_;
};
}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> MakeMetaspaceDecoder(const Json& node, const std::string& where) {
  char32_t replacement;
  int prepend;
  bool split;
  RETURN_IF_ERROR(ParseMetaspace(node, where, replacement, prepend, split));
  return std::make_unique<MetaspaceDecoder>(replacement, prepend != kNever);
}

}  // namespace tessera::hf
