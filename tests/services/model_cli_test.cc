// The real tessera-model binary: tokenize / detokenize JSON Lines against a tokenizer fixture's
// expected ids (made by `tokenizers`), one output line per input line with {"error"} for bad lines and
// exit 1, inspect of a checkpoint directory, and --help.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct Result {
  int exit_code = -1;
  std::vector<std::string> lines;
  std::string out;
};

std::string SourceDir() {
  const char* s = std::getenv("TESSERA_SOURCE_DIR");
  return s != nullptr ? s : ".";
}

std::string Binary() {
  const char* env = std::getenv("TESSERA_BINARY_DIR");
  return absl::StrCat(env != nullptr ? env : TESSERA_DEFAULT_BINARY_DIR, "/services/tessera-model");
}

Result RunModel(const std::string& args, const std::string& stdin_text) {
  const fs::path dir = fs::temp_directory_path() / absl::StrCat("model_cli_", getpid());
  fs::create_directories(dir);
  {
    std::ofstream in(dir / "in");
    in << stdin_text;
  }
  const std::string cmd =
      absl::StrCat(Binary(), " ", args, " < ", (dir / "in").string(), " > ", (dir / "out").string(), " 2>&1");
  const int status = std::system(cmd.c_str());
  Result r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream out(dir / "out");
  std::stringstream ss;
  ss << out.rdbuf();
  r.out = ss.str();
  for (absl::string_view l : absl::StrSplit(r.out, '\n', absl::SkipEmpty())) r.lines.emplace_back(l);
  fs::remove_all(dir);
  return r;
}

std::string Fixture(const std::string& name) { return SourceDir() + "/tests/fixtures/tokenizers/" + name; }

std::vector<json> Expected(const std::string& name, size_t n) {
  std::ifstream in(Fixture(name) + "/expected.jsonl");
  std::vector<json> out;
  std::string line;
  while (out.size() < n && std::getline(in, line)) {
    json j = json::parse(line);
    if (j.contains("text")) out.push_back(j);
  }
  return out;
}

TEST(ModelCli, TokenizeMatchesTokenizersWithAndWithoutSpecialTokens) {
  const auto expected = Expected("llama3_bytelevel", 120);
  std::string input;
  for (const json& j : expected) input += json{{"text", j["text"]}}.dump() + "\n";
  for (bool special : {false, true}) {
    const Result r = RunModel(
        absl::StrCat("tokenize --tokenizer ", Fixture("llama3_bytelevel"), special ? " --add-special-tokens" : ""),
        input);
    ASSERT_EQ(r.exit_code, 0) << r.out;
    ASSERT_EQ(r.lines.size(), expected.size());
    for (size_t k = 0; k < expected.size(); ++k) {
      EXPECT_EQ(json::parse(r.lines[k])["ids"], expected[k][special ? "ids_with_special" : "ids"]) << k;
    }
  }
}

TEST(ModelCli, DetokenizeKeepsOrSkipsSpecialTokens) {
  const auto expected = Expected("llama2_sentencepiece", 80);
  std::string input;
  for (const json& j : expected) input += json{{"ids", j["ids_with_special"]}}.dump() + "\n";
  for (bool skip : {false, true}) {
    const Result r = RunModel(
        absl::StrCat("detokenize --tokenizer ", Fixture("llama2_sentencepiece"), skip ? " --skip-special-tokens" : ""),
        input);
    ASSERT_EQ(r.exit_code, 0) << r.out;
    ASSERT_EQ(r.lines.size(), expected.size());
    for (size_t k = 0; k < expected.size(); ++k) {
      EXPECT_EQ(json::parse(r.lines[k])["text"], expected[k][skip ? "decode_skip" : "decode_keep"]) << k;
    }
  }
}

TEST(ModelCli, BadLinesGetAnErrorLineInPlaceAndExitOne) {
  const Result r = RunModel("tokenize --tokenizer " + Fixture("gpt2_bytelevel"),
                            "{\"text\": \"a\"}\nnot json\n{\"ids\": [1]}\n{\"text\": \"b\"}\n");
  EXPECT_EQ(r.exit_code, 1);
  ASSERT_EQ(r.lines.size(), 4u) << r.out;
  EXPECT_TRUE(json::parse(r.lines[0]).contains("ids"));
  EXPECT_TRUE(json::parse(r.lines[1]).contains("error"));
  EXPECT_TRUE(json::parse(r.lines[2]).contains("error"));
  EXPECT_TRUE(json::parse(r.lines[3]).contains("ids"));
  const Result d =
      RunModel("detokenize --tokenizer " + Fixture("gpt2_bytelevel"), "{\"ids\": [1, -5]}\n{\"ids\": []}\n");
  EXPECT_EQ(d.exit_code, 1);
  ASSERT_EQ(d.lines.size(), 2u);
  EXPECT_TRUE(json::parse(d.lines[0]).contains("error"));
  EXPECT_EQ(json::parse(d.lines[1])["text"], "");
  EXPECT_EQ(RunModel("tokenize --tokenizer /nonexistent", "").exit_code, 2);
}

TEST(ModelCli, InspectPrintsConfigAndTokenizer) {
  const fs::path dir = fs::temp_directory_path() / absl::StrCat("model_cli_ckpt_", getpid());
  fs::create_directories(dir);
  fs::copy_file(SourceDir() + "/tests/fixtures/hf/mixtral_untied/config.json", dir / "config.json");
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(Fixture("mistral_metaspace") + "/" + f, dir / f);
  }
  const Result r = RunModel("inspect " + dir.string(), "");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("family: mixtral"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("parameters: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tokenizer: BPE (byte-fallback)"), std::string::npos) << r.out;
  std::ofstream(dir / "config.json") << R"({"model_type": "bert", "hidden_size": 8})";
  const Result bad = RunModel("inspect " + dir.string(), "");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.out.find("not supported yet"), std::string::npos) << bad.out;
  fs::remove_all(dir);
}

// chat-render against transformers' apply_chat_template on the checkpoint fixture (expected.json made by
// ops/fixtures/make_chat_checkpoint.py), with and without the generation prompt.
TEST(ModelCli, ChatRenderOfTheCheckpointFixtureMatchesTransformers) {
  const std::string ckpt = SourceDir() + "/tests/fixtures/checkpoints/qwen3_moe_chat";
  std::ifstream in(ckpt + "/expected.json");
  std::stringstream ss;
  ss << in.rdbuf();
  const json expected = json::parse(ss.str());
  std::string input;
  for (const json& c : expected["conversations"]) input += json{{"messages", c["messages"]}}.dump() + "\n";
  for (bool gen : {false, true}) {
    const Result r = RunModel(absl::StrCat("chat-render --tokenizer ", ckpt, gen ? " --add-generation-prompt" : ""),
                              input);
    ASSERT_EQ(r.exit_code, 0) << r.out;
    ASSERT_EQ(r.lines.size(), expected["conversations"].size()) << r.out;
    for (size_t k = 0; k < r.lines.size(); ++k) {
      EXPECT_EQ(json::parse(r.lines[k])["text"],
                expected["conversations"][k][gen ? "generation_prompt" : "rendered"]) << k;
    }
  }
  // A bad line in place, exit 1 at the end; a directory without a template is exit 2.
  const Result bad = RunModel("chat-render --tokenizer " + ckpt, "{\"messages\": 3}\n" + input);
  EXPECT_EQ(bad.exit_code, 1);
  ASSERT_EQ(bad.lines.size(), expected["conversations"].size() + 1);
  EXPECT_TRUE(json::parse(bad.lines[0]).contains("error"));
  const Result none = RunModel("chat-render --tokenizer " + Fixture("gpt2_bytelevel"), input);
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.out.find("no chat template"), std::string::npos) << none.out;
}

TEST(ModelCli, HelpPerSubcommand) {
  const Result top = RunModel("--help", "");
  EXPECT_EQ(top.exit_code, 0);
  for (const char* c : {"inspect", "tokenize", "detokenize", "chat-render"}) {
    EXPECT_NE(top.out.find(c), std::string::npos);
  }
  const Result tok = RunModel("tokenize --help", "");
  EXPECT_EQ(tok.exit_code, 0);
  EXPECT_NE(tok.out.find("--add-special-tokens"), std::string::npos);
  const Result detok = RunModel("detokenize --help", "");
  EXPECT_NE(detok.out.find("--skip-special-tokens"), std::string::npos);
  EXPECT_EQ(RunModel("frobnicate", "").exit_code, 2);
}

// chat-render against tests/fixtures/chat (expected texts and errors from transformers'
// apply_chat_template): every case of a family without extra variables, split by add_generation_prompt,
// one process per flag value; tools pass through with their key order.
TEST(ModelCli, ChatRenderMatchesTransformers) {
  using ojson = nlohmann::ordered_json;
  for (const std::string family : {"chatml_qwen2", "mistral"}) {
    const std::string dir = SourceDir() + "/tests/fixtures/chat/" + family;
    for (bool agp : {false, true}) {
      std::vector<ojson> cases;
      std::ifstream in(dir + "/expected.jsonl");
      std::string line;
      while (std::getline(in, line)) {
        ojson c = ojson::parse(line);
        if (c["add_generation_prompt"].get<bool>() == agp && c["extra"].empty() && !c.contains("documents")) {
          cases.push_back(c);
        }
      }
      ASSERT_GE(cases.size(), 4u) << family;
      std::string input;
      bool any_error = false;
      for (const ojson& c : cases) {
        ojson req = {{"messages", c["messages"]}};
        if (c.contains("tools")) req["tools"] = c["tools"];
        input += req.dump() + "\n";
        any_error |= c.contains("error");
      }
      const Result r = RunModel(absl::StrCat("chat-render --tokenizer ", dir, agp ? " --add-generation-prompt" : ""),
                                input);
      EXPECT_EQ(r.exit_code, any_error ? 1 : 0) << r.out;
      ASSERT_EQ(r.lines.size(), cases.size()) << r.out;
      for (size_t k = 0; k < cases.size(); ++k) {
        const ojson got = ojson::parse(r.lines[k]);
        SCOPED_TRACE(family + " " + cases[k]["name"].get<std::string>());
        if (cases[k].contains("text")) {
          EXPECT_EQ(got["text"], cases[k]["text"]);
        } else if (cases[k]["raised"].get<bool>()) {
          EXPECT_EQ(got["error"], cases[k]["error"]);
        } else {
          EXPECT_TRUE(got.contains("error"));
        }
      }
    }
  }
}

TEST(ModelCli, ChatRenderBadLinesAndMissingTemplate) {
  const std::string dir = SourceDir() + "/tests/fixtures/chat/olmoe";
  const Result r = RunModel("chat-render --tokenizer " + dir,
                            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n"
                            "not json\n{\"messages\": []}\n{\"messages\": [], \"oops\": 1}\n");
  EXPECT_EQ(r.exit_code, 1);
  ASSERT_EQ(r.lines.size(), 4u) << r.out;
  EXPECT_EQ(json::parse(r.lines[0])["text"], "<|user|>\nhi\n");
  EXPECT_TRUE(json::parse(r.lines[1]).contains("error"));
  EXPECT_TRUE(json::parse(r.lines[2]).contains("error"));
  EXPECT_NE(json::parse(r.lines[3])["error"].get<std::string>().find("oops"), std::string::npos);
  // A tokenizer fixture without any chat template: refused at start.
  const Result none = RunModel("chat-render --tokenizer " + Fixture("gpt2_bytelevel"), "");
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.out.find("no chat template"), std::string::npos) << none.out;
}

}  // namespace
}  // namespace tessera
