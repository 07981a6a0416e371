// ByteTokenizer: the byte-level vocabulary of the built-in backbone.
//
// Ids 0..255 are the bytes themselves, 256 = BOS, 257 = EOS, 258 = PAD; vocab_size() is 259. Every byte
// string round-trips exactly (Decode(Encode(s)) == s), including invalid UTF-8 and NUL bytes.
#pragma once

#include "core/tokenizer/tokenizer.h"

namespace tessera {

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kBos = 256;
  static constexpr int32_t kEos = 257;
  static constexpr int32_t kPad = 258;
  static constexpr int32_t kVocabSize = 259;

  std::vector<int32_t> Encode(std::string_view text) const override;
  std::string Decode(absl::Span<const int32_t> ids) const override;
  std::string DecodeToken(int32_t id) const override;

  int32_t vocab_size() const override { return kVocabSize; }
  int32_t bos_id() const override { return kBos; }
  int32_t eos_id() const override { return kEos; }
  int32_t pad_id() const override { return kPad; }
  std::string name() const override { return "byte"; }
};

}  // namespace tessera
