// IncrementalDecoder (core/tokenizer/incremental_decoder.h): on every tokenizer fixture (byte-level BPE,
// byte-fallback and Metaspace SentencePiece-style, under tests/fixtures/tokenizers/) and on the byte
// tokenizer, the streamed chunks concatenate to exactly Decode(all ids), for the fixtures' encodings
// and for random id sequences; no chunk before Finish ends inside a UTF-8 character (raw or as U+FFFD);
// a Metaspace stream does not start with the space that per-token decoding leaves; byte-fallback
// pieces of one character come out together.
#include "core/tokenizer/incremental_decoder.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/tokenizer/byte_tokenizer.h"
#include "core/tokenizer/hf_tokenizer.h"
#include "core/tokenizer/utf8.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

std::filesystem::path FixtureRoot() {
  const char* src = std::getenv("TESSERA_SOURCE_DIR");
  return std::filesystem::path(src != nullptr ? src : ".") / "tests" / "fixtures" / "tokenizers";
}

std::vector<std::string> FixtureNames() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(FixtureRoot(), ec)) {
    if (e.is_directory() && std::filesystem::exists(e.path() / "tokenizer.json")) names.push_back(e.path().filename());
  }
  std::sort(names.begin(), names.end());
  return names;
}

bool EndsIncomplete(const std::string& s) {
  return (s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0) || Utf8CompletePrefixLength(s) < s.size();
}

struct Streamed {
  std::vector<std::string> chunks;  // one per Push, then Finish's
  std::string text;
};

Streamed Stream(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  IncrementalDecoder dec(tok);
  Streamed s;
  for (int32_t id : ids) {
    s.chunks.push_back(dec.Push(id));
    s.text += s.chunks.back();
  }
  s.chunks.push_back(dec.Finish());
  s.text += s.chunks.back();
  return s;
}

// The concatenation is Decode(ids); chunks before Finish never end inside a character.
void ExpectExactStream(const Tokenizer& tok, const std::vector<int32_t>& ids, const std::string& what) {
  const Streamed s = Stream(tok, ids);
  ASSERT_EQ(s.text, tok.Decode(ids)) << what << ": " << nlohmann::json(ids).dump();
  for (size_t i = 0; i + 1 < s.chunks.size(); ++i) {
    EXPECT_FALSE(EndsIncomplete(s.chunks[i])) << what << " chunk " << i;
  }
}

class IncrementalDecoderFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(IncrementalDecoderFixture, StreamEqualsDecodeOfAllIds) {
  const std::filesystem::path dir = FixtureRoot() / GetParam();
  auto tok = HfTokenizer::Create(dir.string());
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::ifstream in(dir / "expected.jsonl");
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    for (const char* key : {"ids", "ids_with_special", "ids_only"}) {
      if (!j.contains(key)) continue;
      ExpectExactStream(**tok, j[key].get<std::vector<int32_t>>(), std::string(key) + " of line " + std::to_string(n));
      if (HasFatalFailure()) return;
    }
    ++n;
  }
  EXPECT_GT(n, 100);
  // Random ids (any order of any tokens, special ones included): what sampling can produce.
  std::mt19937 rng(123);
  std::uniform_int_distribution<int32_t> any(0, (*tok)->vocab_size() - 1);
  for (int t = 0; t < 300; ++t) {
    std::vector<int32_t> ids(1 + rng() % 40);
    for (int32_t& id : ids) id = any(rng);
    ExpectExactStream(**tok, ids, "random sequence " + std::to_string(t));
    if (HasFatalFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(AllFixtures, IncrementalDecoderFixture, ::testing::ValuesIn(FixtureNames()),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

TEST(IncrementalDecoder, FixturesOfEveryKindAreCovered) {
  const std::vector<std::string> names = FixtureNames();
  for (const char* want : {"gpt2_bytelevel", "llama2_sentencepiece", "mistral_metaspace"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
  }
}

// Metaspace: per-token decoding streams "▁Hello" as " Hello"; transformers' decode of the generated
// ids (and the stream) starts with "Hello".
TEST(IncrementalDecoder, MetaspaceStreamHasNoLeadingSpace) {
  for (const char* name : {"mistral_metaspace", "llama2_sentencepiece"}) {
    auto tok = HfTokenizer::Create((FixtureRoot() / name).string());
    ASSERT_TRUE(tok.ok()) << tok.status();
    auto ids = (*tok)->EncodeText("Hello world, again", false);
    ASSERT_TRUE(ids.ok());
    std::string per_token;
    for (int32_t id : *ids) per_token += (*tok)->DecodeToken(id);
    EXPECT_EQ(per_token.substr(0, 1), " ") << name << ": the old per-token stream";
    const Streamed s = Stream(**tok, *ids);
    EXPECT_EQ(s.text, "Hello world, again") << name;
    EXPECT_EQ(s.text, (*tok)->Decode(*ids)) << name;
  }
}

// Byte fallback: a character missing from the vocabulary arrives as <0x..> byte tokens; the stream
// holds the first bytes back and emits the whole character with its last byte.
TEST(IncrementalDecoder, ByteFallbackCharacterComesOutWhole) {
  auto tok = HfTokenizer::Create((FixtureRoot() / "llama2_sentencepiece").string());
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::string text = "a \xF0\x9F\xA6\x9C b";  // U+1F99C, unlikely to be a token of the small vocabulary
  auto ids = (*tok)->EncodeText(text, false);
  ASSERT_TRUE(ids.ok());
  const Streamed s = Stream(**tok, *ids);
  EXPECT_EQ(s.text, (*tok)->Decode(*ids));
  int with_char = 0, empty = 0;
  for (size_t i = 0; i + 1 < s.chunks.size(); ++i) {
    with_char += s.chunks[i].find("\xF0\x9F\xA6\x9C") != std::string::npos;
    empty += s.chunks[i].empty();
  }
  EXPECT_EQ(with_char, 1);
  EXPECT_GE(empty, 3) << "the character's first three byte tokens are held back";
}

// Byte-level BPE: the same with byte-level tokens, which may split a character between ids.
TEST(IncrementalDecoder, ByteLevelSplitCharacterIsHeldBack) {
  auto tok = HfTokenizer::Create((FixtureRoot() / "gpt2_bytelevel").string());
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::string text = "x \xF0\x9F\xA6\x9C\xF0\x9F\x90\x99 y";
  auto ids = (*tok)->EncodeText(text, false);
  ASSERT_TRUE(ids.ok());
  const Streamed s = Stream(**tok, *ids);
  EXPECT_EQ(s.text, text);
  for (size_t i = 0; i + 1 < s.chunks.size(); ++i) EXPECT_FALSE(EndsIncomplete(s.chunks[i])) << i;
}

// A character that never completes (the stream ends inside it) comes out at Finish, as Decode has it.
TEST(IncrementalDecoder, FinishFlushesAnIncompleteTail) {
  ByteTokenizer tok;
  std::vector<int32_t> ids = tok.Encode("ok \xE2\x82");  // first two bytes of U+20AC
  IncrementalDecoder dec(tok);
  std::string streamed;
  for (int32_t id : ids) streamed += dec.Push(id);
  EXPECT_EQ(streamed, "ok ");
  EXPECT_EQ(dec.Finish(), "\xE2\x82");
}

// The byte tokenizer: random bytes (invalid UTF-8 included) stream exactly.
TEST(IncrementalDecoder, ByteTokenizerRandomBytes) {
  ByteTokenizer tok;
  std::mt19937 rng(5);
  for (int t = 0; t < 200; ++t) {
    std::string bytes(1 + rng() % 30, '\0');
    for (char& c : bytes) c = static_cast<char>(rng() % 256);
    std::vector<int32_t> ids = tok.Encode(bytes);
    const Streamed s = Stream(tok, ids);
    ASSERT_EQ(s.text, tok.Decode(ids)) << t;
    ASSERT_EQ(s.text, bytes) << t;
  }
}

}  // namespace
}  // namespace tessera
