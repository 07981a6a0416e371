// ByteFallback decoder: runs of `<0xHH>` tokens become the text their bytes spell, or one U+FFFD per
// byte when those bytes are not valid UTF-8.
#include <optional>

#include "core/tokenizer/hf/decoder.h"
#include "core/tokenizer/hf/unicode.h"
#include "core/util/status_macros.h"

namespace tessera::hf {

namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The byte of a "<0xHH>" token (Rust's u8::from_str_radix(HH, 16), which also takes "+H").
std::optional<unsigned char> ByteToken(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return std::nullopt;
  if (t[3] == '+') {
    const int d = HexDigit(t[4]);
    if (d < 0) return std::nullopt;
    return static_cast<unsigned char>(d);
  }
  const int hi = HexDigit(t[3]), lo = HexDigit(t[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<unsigned char>(hi * 16 + lo);
}

class ByteFallbackDecoder final : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string bytes;
    const auto flush = [&] {
      if (bytes.empty()) return;
      if (IsValidUtf8(bytes)) {
        out.push_back(bytes);
      } else {
        for (size_t k = 0; k < bytes.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
      }
      bytes.clear();
    };
    for (std::string& t : tokens) {
      if (auto b = ByteToken(t)) {
        bytes.push_back(static_cast<char>(*b));
        continue;
      }
      flush();
      out.push_back(std::move(t));
    }
    flush();
    tokens.swap(out);
  }
  void StreamToken(std::string& token) const override {
    if (auto b = ByteToken(token)) token.assign(1, static_cast<char>(*b));
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> MakeByteFallbackDecoder(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type"}, where));
  return std::make_unique<ByteFallbackDecoder>();
}

}  // namespace tessera::hf
