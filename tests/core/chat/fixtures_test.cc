// Parity with transformers' apply_chat_template: every case of tests/fixtures/chat/<family>/expected.jsonl
// (made by ops/fixtures/make_chat_fixtures.py) is loaded through LoadChatTemplate from the same
// directory transformers loaded, rendered, and compared byte for byte -- or, where transformers raised,
// refused (with exactly the template's raise_exception message).
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "core/chat/chat_template_loader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tessera::chat {
namespace {

std::string FixtureDir(const std::string& family) {
  const char* src = std::getenv("TESSERA_SOURCE_DIR");
  return std::string(src ? src : ".") + "/tests/fixtures/chat/" + family;
}

// The clock the fixture script gave strftime_now: 2025-03-07 14:05:09.
std::tm FixedNow() {
  std::tm tm{};
  tm.tm_year = 2025 - 1900;
  tm.tm_mon = 2;
  tm.tm_mday = 7;
  tm.tm_hour = 14;
  tm.tm_min = 5;
  tm.tm_sec = 9;
  tm.tm_wday = 5;  // Friday
  tm.tm_yday = 65;
  return tm;
}

class FixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(FixtureTest, RendersExactlyAsTransformers) {
  const std::string dir = FixtureDir(GetParam());
  absl::StatusOr<std::optional<CheckpointChatTemplate>> loaded = LoadChatTemplate(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE(loaded->has_value()) << dir;
  const CheckpointChatTemplate& ct = **loaded;

  std::ifstream in(dir + "/expected.jsonl");
  ASSERT_TRUE(in) << dir;
  std::string line;
  int cases = 0, errors = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::ordered_json c = nlohmann::ordered_json::parse(line);
    SCOPED_TRACE(GetParam() + " / " + c["name"].get<std::string>());
    ChatRenderOptions opts = ct.defaults;
    opts.add_generation_prompt = c["add_generation_prompt"].get<bool>();
    for (auto it = c["extra"].begin(); it != c["extra"].end(); ++it) opts.extra[it.key()] = *it;
    if (c.contains("tools")) opts.tools = c["tools"];
    if (c.contains("documents")) opts.documents = c["documents"];
    opts.now = FixedNow;
    absl::StatusOr<std::string> got = ct.ForTools(c.contains("tools")).Render(c["messages"], opts);
    ++cases;
    if (c.contains("text")) {
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(*got, c["text"].get<std::string>());
    } else {
      ++errors;
      ASSERT_FALSE(got.ok()) << "transformers raised \"" << c["error"] << "\" but we rendered:\n" << *got;
      EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
      const std::string want = c["error"].get<std::string>();
      if (c["raised"].get<bool>()) {
        EXPECT_EQ(got.status().message(), want);
      } else {
        EXPECT_THAT(std::string(got.status().message()), ::testing::HasSubstr(want));
      }
    }
  }
  EXPECT_GE(cases, 18);
  RecordProperty("cases", cases);
  RecordProperty("errors", errors);
}

INSTANTIATE_TEST_SUITE_P(Families, FixtureTest,
                         ::testing::Values("chatml_qwen2", "qwen3", "llama3", "mistral", "mixtral", "deepseek_v2",
                                           "deepseek_v3", "olmoe", "granite", "constructs"));

TEST(LoaderTest, ChatTemplateJinjaTakesPrecedenceOverConfig) {
  // qwen3's tokenizer_config.json holds a stale "STALE {{ messages }}" template; the .jinja file wins.
  auto loaded = LoadChatTemplate(FixtureDir("qwen3"));
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  EXPECT_THAT((*loaded)->source_file, ::testing::EndsWith("chat_template.jinja"));
  EXPECT_THAT((*loaded)->chat_template->source(), ::testing::Not(::testing::HasSubstr("STALE")));
}

TEST(LoaderTest, NamedTemplatesPickDefaultAndToolUse) {
  auto loaded = LoadChatTemplate(FixtureDir("deepseek_v2"));
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  const auto& ct = **loaded;
  ASSERT_NE(ct.tool_use, nullptr);
  EXPECT_EQ(&ct.ForTools(false), ct.chat_template.get());
  EXPECT_EQ(&ct.ForTools(true), ct.tool_use.get());
  // bos_token was an AddedToken object {"content": ...}.
  EXPECT_EQ(ct.defaults.bos_token, "<｜begin▁of▁sentence｜>");
}

TEST(LoaderTest, SpecialTokensBecomeVariables) {
  auto loaded = LoadChatTemplate(FixtureDir("mistral"));
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  EXPECT_EQ((*loaded)->defaults.bos_token, "<s>");
  EXPECT_EQ((*loaded)->defaults.eos_token, "</s>");
  EXPECT_EQ((*loaded)->defaults.extra["unk_token"], "<unk>");
}

// Checked with transformers 5.25: special_tokens_map.json overrides the config unless the config has
// added_tokens_decoder, in which case it is not read.
TEST(LoaderTest, SpecialTokensMapOverridesOnlyWithoutAddedTokensDecoder) {
  for (bool with_decoder : {false, true}) {
    std::string dir = ::testing::TempDir() + "/stm_" + (with_decoder ? "dec_" : "nodec_") + std::to_string(::getpid());
    std::filesystem::create_directories(dir);
    nlohmann::ordered_json cfg = {{"bos_token", "<a>"}, {"chat_template", "{{ bos_token }}|{{ eos_token }}"}};
    if (with_decoder) cfg["added_tokens_decoder"] = {{"1", {{"content", "<a>"}, {"special", true}}}};
    std::ofstream(dir + "/tokenizer_config.json") << cfg.dump();
    std::ofstream(dir + "/special_tokens_map.json") << R"({"bos_token": {"content": "<b>"}, "eos_token": "<e>"})";
    auto loaded = LoadChatTemplate(dir);
    ASSERT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status();
    auto text = (*loaded)->chat_template->Render(nlohmann::ordered_json::parse(R"([{"role":"user","content":"x"}])"),
                                                 (*loaded)->defaults);
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(*text, with_decoder ? "<a>|" : "<b>|<e>");
    std::filesystem::remove_all(dir);
  }
}

TEST(LoaderTest, MalformedFilesNameThemselves) {
  std::string dir = ::testing::TempDir() + "/bad_cfg_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/tokenizer_config.json") << R"({"chat_template": "{% if x %}unclosed"})";
  auto loaded = LoadChatTemplate(dir);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(std::string(loaded.status().message()), ::testing::HasSubstr("tokenizer_config.json chat_template"));
  std::ofstream(dir + "/tokenizer_config.json") << R"({"chat_template": [{"name": "tool_use", "template": "x"}]})";
  loaded = LoadChatTemplate(dir);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(std::string(loaded.status().message()), ::testing::HasSubstr("none named \"default\""));
  std::ofstream(dir + "/tokenizer_config.json") << "{not json";
  loaded = LoadChatTemplate(dir);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(std::string(loaded.status().message()), ::testing::HasSubstr("invalid JSON"));
  std::filesystem::remove_all(dir);
}

TEST(LoaderTest, NoTemplateIsNullopt) {
  auto loaded = LoadChatTemplate(FixtureDir("does-not-exist"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE(loaded->has_value());
}

}  // namespace
}  // namespace tessera::chat
