// ByteLevel decoder: each token whose chars are all ByteLevel chars becomes its bytes (others stay as
// they are); the bytes of all tokens are joined and read as UTF-8 with invalid parts as U+FFFD.
#include "core/tokenizer/hf/byte_level.h"
#include "core/tokenizer/hf/decoder.h"
#include "core/tokenizer/hf/unicode.h"
#include "core/util/status_macros.h"

namespace tessera::hf {

namespace {
class ByteLevelDecoder final : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& t : tokens) {
      if (!DecodeByteLevel(t, bytes)) bytes.append(t);
    }
    tokens.assign(1, Utf8Lossy(bytes));
  }
  void StreamToken(std::string& token) const override {
    std::string bytes;
    if (DecodeByteLevel(token, bytes)) token.swap(bytes);
  }
};
}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> MakeByteLevelDecoder(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type", "add_prefix_space", "trim_offsets", "use_regex"}, where));
  return std::make_unique<ByteLevelDecoder>();
}

}  // namespace tessera::hf
