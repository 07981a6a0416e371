// Parity with Hugging Face `tokenizers`: every directory under tests/fixtures/tokenizers/ (made by
// ops/fixtures/make_tokenizer_fixtures.py) is loaded and each expected.jsonl line checked: ids with and
// without special tokens, and decode keeping and skipping special tokens. New fixture directories are
// picked up without touching this file.
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/tokenizer/hf_tokenizer.h"
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
    if (e.is_directory() && std::filesystem::exists(e.path() / "expected.jsonl")) names.push_back(e.path().filename());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<int32_t> Ids(const nlohmann::json& j) { return j.get<std::vector<int32_t>>(); }

class HfFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HfFixtureTest, MatchesTokenizers) {
  const std::filesystem::path dir = FixtureRoot() / GetParam();
  auto tok = HfTokenizer::Create(dir.string());
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::ifstream in(dir / "expected.jsonl");
  std::string line;
  int n = 0, failures = 0;
  while (std::getline(in, line)) {
    ++n;
    const auto j = nlohmann::json::parse(line);
    std::vector<int32_t> with_special;
    if (j.contains("text")) {
      const std::string text = j["text"];
      auto ids = (*tok)->EncodeText(text, false);
      ASSERT_TRUE(ids.ok()) << ids.status();
      auto ids_sp = (*tok)->EncodeText(text, true);
      ASSERT_TRUE(ids_sp.ok()) << ids_sp.status();
      EXPECT_EQ(*ids, Ids(j["ids"])) << "line " << n << " text " << nlohmann::json(text).dump();
      EXPECT_EQ(*ids_sp, Ids(j["ids_with_special"])) << "line " << n << " text " << nlohmann::json(text).dump();
      failures += *ids != Ids(j["ids"]) || *ids_sp != Ids(j["ids_with_special"]);
      with_special = Ids(j["ids_with_special"]);
    } else {
      with_special = Ids(j["ids_only"]);
    }
    const std::string keep = (*tok)->Decode(with_special, false);
    const std::string skip = (*tok)->Decode(with_special, true);
    EXPECT_EQ(keep, j["decode_keep"].get<std::string>()) << "line " << n;
    EXPECT_EQ(skip, j["decode_skip"].get<std::string>()) << "line " << n;
    failures += keep != j["decode_keep"].get<std::string>() || skip != j["decode_skip"].get<std::string>();
    if (failures > 20) FAIL() << "too many mismatches, stopping";
  }
  EXPECT_GT(n, 100);
}

INSTANTIATE_TEST_SUITE_P(AllFixtures, HfFixtureTest, ::testing::ValuesIn(FixtureNames()), [](const auto& info) {
  std::string name = info.param;  // gtest names allow only [A-Za-z0-9_]
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
});

TEST(HfFixtures, AtLeastTheCommittedOnesAreFound) { EXPECT_GE(FixtureNames().size(), 10u); }

}  // namespace
}  // namespace tessera
