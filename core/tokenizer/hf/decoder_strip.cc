// Strip decoder: from every token, up to `start` leading and `stop` trailing `content` chars removed.
#include "core/tokenizer/hf/decoder.h"
#include "core/tokenizer/hf/unicode.h"
#include "core/util/status_macros.h"

namespace tessera::hf {

namespace {
class StripDecoder final : public Decoder {
 public:
  StripDecoder(char32_t content, int64_t start, int64_t stop) : content_(content), start_(start), stop_(stop) {}
  void DecodeChain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      std::vector<size_t> starts;  // byte offset of every char, plus the end
      for (size_t i = 0; i < t.size();) {
        starts.push_back(i);
        i += Utf8Length(static_cast<unsigned char>(t[i]));
      }
      const size_t n = starts.size();
      starts.push_back(t.size());
      const auto char_at = [&](size_t k) {
        size_t i = starts[k];
        return NextCodePoint(t, i);
      };
      size_t begin = 0;
      for (size_t k = 0; k < n && static_cast<int64_t>(k) < start_ && char_at(k) == content_; ++k) begin = k + 1;
      size_t end = n;
      for (int64_t k = 0; k < stop_ && static_cast<size_t>(k) < n; ++k) {
        const size_t index = n - static_cast<size_t>(k) - 1;
        if (char_at(index) != content_) break;
        end = index;
      }
      t = end > begin ? t.substr(starts[begin], starts[end] - starts[begin]) : std::string();
    }
  }
  void StreamToken(std::string&) const override {}

 private:
  char32_t content_;
  int64_t start_, stop_;
};
}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> MakeStripDecoder(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type", "content", "start", "stop"}, where));
  ASSIGN_OR_RETURN(std::string content, GetString(node, "content", where));
  size_t i = 0;
  char32_t cp = 0;
  if (content.empty() || (cp = NextCodePoint(content, i), i != content.size())) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".content must be one character"));
  }
  ASSIGN_OR_RETURN(int64_t start, GetInt(node, "start", where));
  ASSIGN_OR_RETURN(int64_t stop, GetInt(node, "stop", where));
  return std::make_unique<StripDecoder>(cp, start, stop);
}

}  // namespace tessera::hf
