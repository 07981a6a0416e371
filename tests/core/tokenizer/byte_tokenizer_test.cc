#include "core/tokenizer/byte_tokenizer.h"

#include <memory>
#include <random>

#include "core/tokenizer/utf8.h"
#include "gtest/gtest.h"

namespace tessera {
namespace {

TEST(ByteTokenizer, VocabularyAndSpecialIds) {
  std::unique_ptr<Tokenizer> tok = std::make_unique<ByteTokenizer>();
  EXPECT_EQ(tok->vocab_size(), 259);
  EXPECT_EQ(tok->bos_id(), 256);
  EXPECT_EQ(tok->eos_id(), 257);
  EXPECT_EQ(tok->pad_id(), 258);
  EXPECT_EQ(tok->name(), "byte");
  EXPECT_TRUE(tok->IsSpecial(256));
  EXPECT_TRUE(tok->IsSpecial(258));
  EXPECT_FALSE(tok->IsSpecial(0));
  EXPECT_FALSE(tok->IsSpecial(255));
}

TEST(ByteTokenizer, EncodeIsTheBytesWithoutSpecialTokens) {
  ByteTokenizer tok;
  EXPECT_EQ(tok.Encode("Hi\n"), (std::vector<int32_t>{72, 105, 10}));
  EXPECT_EQ(tok.Encode("é"), (std::vector<int32_t>{0xC3, 0xA9}));  // UTF-8 bytes, unsigned
  EXPECT_EQ(tok.Encode(std::string_view("\0\xff", 2)), (std::vector<int32_t>{0, 255}));
  EXPECT_TRUE(tok.Encode("").empty());
}

TEST(ByteTokenizer, EveryByteStringRoundTrips) {
  ByteTokenizer tok;
  std::mt19937 rng(7);
  for (int iter = 0; iter < 200; ++iter) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    std::vector<int32_t> ids = tok.Encode(s);
    for (int32_t id : ids) {
      ASSERT_GE(id, 0);
      ASSERT_LT(id, 256);
    }
    EXPECT_EQ(tok.Decode(ids), s);
  }
}

TEST(ByteTokenizer, DecodeSkipsSpecialAndInvalidIds) {
  ByteTokenizer tok;
  std::vector<int32_t> ids = {256, 'a', 258, 'b', 257, -1, 259, 100000, 'c'};
  EXPECT_EQ(tok.Decode(ids), "abc");
  EXPECT_EQ(tok.DecodeToken('z'), "z");
  EXPECT_EQ(tok.DecodeToken(0), std::string(1, '\0'));
  EXPECT_EQ(tok.DecodeToken(255), "\xff");
  EXPECT_EQ(tok.DecodeToken(256), "");
  EXPECT_EQ(tok.DecodeToken(257), "");
  EXPECT_EQ(tok.DecodeToken(-3), "");
  // Token-by-token decoding concatenates to the whole decode.
  std::string streamed;
  for (int32_t id : ids) streamed += tok.DecodeToken(id);
  EXPECT_EQ(streamed, tok.Decode(ids));
}

TEST(Utf8, CompletePrefixHoldsBackOnlyATruncatedFinalCharacter) {
  EXPECT_EQ(Utf8CompletePrefixLength(""), 0u);
  EXPECT_EQ(Utf8CompletePrefixLength("abc"), 3u);
  const std::string euro = "\xE2\x82\xAC";       // 3 bytes
  const std::string emoji = "\xF0\x9F\x98\x80";  // 4 bytes
  EXPECT_EQ(Utf8CompletePrefixLength("a\xE2\x82\xAC"), 4u);
  EXPECT_EQ(Utf8CompletePrefixLength("a\xE2"), 1u);
  EXPECT_EQ(Utf8CompletePrefixLength("a\xE2\x82"), 1u);
  EXPECT_EQ(Utf8CompletePrefixLength("ab\xF0\x9F\x98"), 2u);
  EXPECT_EQ(Utf8CompletePrefixLength("ab\xF0\x9F\x98\x80"), 6u);
  EXPECT_EQ(Utf8CompletePrefixLength("\xC3"), 0u);
  // Invalid bytes are passed through, never stalling the stream.
  EXPECT_EQ(Utf8CompletePrefixLength("a\xFF"), 2u);
  EXPECT_EQ(Utf8CompletePrefixLength("\x80\x80"), 2u);
  EXPECT_EQ(Utf8CompletePrefixLength("a\x80\x80\x80\x80\x80"), 6u);
  // Streaming any split of a valid string through the helper reassembles it with no broken pieces.
  const std::string text = std::string("h").append(euro).append("é").append(emoji).append("!");
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    std::string pending = text.substr(0, cut), out;
    size_t k = Utf8CompletePrefixLength(pending);
    out += pending.substr(0, k);
    pending = pending.substr(k) + text.substr(cut);
    EXPECT_EQ(Utf8CompletePrefixLength(pending), pending.size());
    EXPECT_EQ(out + pending, text);
  }
}

// The Hugging Face-style interface on the byte tokenizer: BOS only when asked, specials, kind, eos_ids.
TEST(ByteTokenizer, TextInterfaceDefaults) {
  const ByteTokenizer tok;
  const Tokenizer& base = tok;
  EXPECT_EQ(*base.EncodeText("Hi", true), (std::vector<int32_t>{256, 72, 105}));
  EXPECT_EQ(*base.EncodeText("Hi", false), (std::vector<int32_t>{72, 105}));
  EXPECT_EQ(base.Decode(std::vector<int32_t>{256, 72, 105, 257}, false), "Hi");
  EXPECT_TRUE(base.IsSpecialId(257));
  EXPECT_FALSE(base.IsSpecialId(65));
  EXPECT_EQ(base.eos_ids(), (std::vector<int32_t>{257}));
  EXPECT_EQ(base.kind(), "byte");
  EXPECT_FALSE(base.TokenToId("a").has_value());
}

}  // namespace
}  // namespace tessera
