#include "core/data/jsonl_dataset.h"

#include "core/tokenizer/byte_tokenizer.h"
#include "core/tokenizer/hf_tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tessera::data {
namespace {

const ByteTokenizer kTok;

absl::Status ErrorOf(std::string_view jsonl, const DatasetLimits& limits = {}) {
  return ParseJsonlDataset(jsonl, kTok, limits).status();
}

void ExpectLineError(std::string_view jsonl, int line, std::string_view reason_part) {
  absl::Status st = ErrorOf(jsonl);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << jsonl;
  std::string msg(st.message());
  EXPECT_EQ(msg.rfind("line " + std::to_string(line) + ": ", 0), 0u) << msg;
  EXPECT_NE(msg.find(reason_part), std::string::npos) << msg;
}

TEST(JsonlDatasetTest, PromptCompletionMasksTheCompletionAndEos) {
  auto ds = ParseJsonlDataset("{\"prompt\":\"ab\",\"completion\":\"cd\"}\n", kTok);
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->examples.size(), 1u);
  const auto& e = ds->examples[0];
  EXPECT_EQ(e.tokens, (std::vector<int32_t>{256, 'a', 'b', 'c', 'd', 257}));
  EXPECT_EQ(e.loss_mask, (std::vector<uint8_t>{0, 0, 0, 1, 1, 1}));
  EXPECT_EQ(e.prompt_tokens, 3);
  EXPECT_EQ(ds->num_tokens, 6);
  EXPECT_EQ(ds->num_loss_tokens, 3);
  EXPECT_EQ(ds->num_prompt_completion, 1);
}

TEST(JsonlDatasetTest, TextTrainsOnEveryTokenAfterBos) {
  auto ds = ParseJsonlDataset("{\"text\":\"hi\"}\r\n\n  \n{\"text\":\"\\u00e9\"}", kTok);
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->examples.size(), 2u);
  EXPECT_EQ(ds->examples[0].tokens, (std::vector<int32_t>{256, 'h', 'i', 257}));
  EXPECT_EQ(ds->examples[0].loss_mask, (std::vector<uint8_t>{0, 1, 1, 1}));
  EXPECT_EQ(ds->examples[1].tokens, (std::vector<int32_t>{256, 0xc3, 0xa9, 257}));  // UTF-8 bytes
  EXPECT_EQ(ds->num_text, 2);
}

TEST(JsonlDatasetTest, ErrorsNameTheLineAndTheReason) {
  const std::string ok = "{\"text\":\"fine\"}\n";
  ExpectLineError(ok + "{\"text\": \"unterminated}\n", 2, "invalid JSON");
  ExpectLineError(ok + ok + "[1,2]\n", 3, "expected a JSON object");
  ExpectLineError("{\"prompt\":\"p\"}\n", 1, "missing field \"completion\"");
  ExpectLineError("{\"completion\":\"c\"}\n", 1, "missing field \"prompt\"");
  ExpectLineError("{}\n", 1, "missing field");
  ExpectLineError(ok + "\n{\"text\":5}\n", 3, "\"text\" must be a string");
  ExpectLineError("{\"prompt\":\"p\",\"completion\":null}", 1, "\"completion\" must be a string");
  ExpectLineError("{\"text\":\"a\",\"prompt\":\"b\",\"completion\":\"c\"}", 1, "cannot be combined");
  ExpectLineError("{\"txt\":\"a\"}", 1, "unknown field \"txt\"");
  ExpectLineError("{\"text\":\"\"}", 1, "\"text\" is empty");
  ExpectLineError("{\"prompt\":\"a\",\"completion\":\"\"}", 1, "\"completion\" is empty");
  ExpectLineError("{\"text\":\"a\"} trailing", 1, "invalid JSON");
  ExpectLineError(std::string("{\"text\":\"\xff\xfe\"}"), 1, "invalid JSON");  // not UTF-8
}

// Found by tests/services/malformed_input_test (an upload with "weight": -1e999): nlohmann throws
// out_of_range, not parse_error, for a number beyond double, and it escaped the parser and terminated
// the server. Now a line error like any invalid JSON.
TEST(JsonlDatasetTest, NumberOverflowIsALineErrorNotAnException) {
  for (const char* line : {"{\"text\": \"a\", \"weight\": -1e999}\n", "{\"text\": 1e400}\n",
                           "{\"prompt\": \"a\", \"completion\": \"b\"}\n[1e999]\n"}) {
    absl::StatusOr<ParsedDataset> ds = ParseJsonlDataset(line, kTok);
    ASSERT_FALSE(ds.ok()) << line;
    EXPECT_EQ(ds.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(ds.status().message()), ::testing::HasSubstr("invalid JSON (number overflow")) << line;
  }
}

TEST(JsonlDatasetTest, Limits) {
  DatasetLimits limits;
  limits.max_tokens_per_example = 5;
  auto st = ErrorOf("{\"text\":\"ab\"}\n{\"text\":\"abcd\"}\n", limits);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("line 2: example has 6 tokens"), std::string_view::npos) << st;
  limits = {};
  limits.max_examples = 1;
  EXPECT_EQ(ErrorOf("{\"text\":\"a\"}\n{\"text\":\"b\"}\n", limits).code(),
            absl::StatusCode::kResourceExhausted);
  limits = {};
  limits.max_bytes = 4;
  EXPECT_EQ(ErrorOf("{\"text\":\"a\"}", limits).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrorOf("\n\n").code(), absl::StatusCode::kInvalidArgument);  // no examples
}

TEST(JsonlDatasetTest, WritersRoundTripThroughTheParser) {
  auto task = Task::Create("cipher", 3);
  ASSERT_TRUE(task.ok());
  auto examples = task->Generate(1, 20);
  examples.push_back({"quote \" and \\ and\nnewline", "tab\tdone"});
  std::string jsonl = ExamplesToJsonl(examples);
  auto ds = ParseJsonlDataset(jsonl, kTok);
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->examples.size(), examples.size());
  for (size_t i = 0; i < examples.size(); ++i) {
    const auto& t = ds->examples[i].tokens;
    std::string prompt(t.begin() + 1, t.begin() + ds->examples[i].prompt_tokens);
    std::string completion(t.begin() + ds->examples[i].prompt_tokens, t.end() - 1);
    EXPECT_EQ(prompt, examples[i].prompt);
    EXPECT_EQ(completion, examples[i].completion);
  }
  auto texts = ParseJsonlDataset(TextsToJsonl({"one", "two\nlines"}), kTok);
  ASSERT_TRUE(texts.ok());
  EXPECT_EQ(texts->num_text, 2);
}


// The builtin:tiny chat format: "<|user|>\n...<|end|>\n<|assistant|>\n...<|end|>\n", BOS first.
class ChatDatasetTest : public ::testing::Test {
 protected:
  ChatDatasetTest() : tpl_(chat::BuiltinTinyChatTemplate()) {
    chat_.chat_template = tpl_.get();
    chat_.prepend_bos = true;
  }
  std::unique_ptr<chat::ChatTemplate> tpl_;
  DatasetChat chat_;
};

TEST_F(ChatDatasetTest, LossOnAssistantTurnsOnlyAndWeightZeroExcludesOne) {
  const std::string line =
      R"({"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo","weight":0},)"
      R"({"role":"user","content":"q"},{"role":"assistant","content":"ok"}]})";
  auto ds = ParseJsonlDataset(line, kTok, {}, &chat_);
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->examples.size(), 1u);
  EXPECT_EQ(ds->num_chat, 1);
  const TokenizedExample& e = ds->examples[0];
  // Tokens: BOS + the rendering's bytes; the targets are exactly the second assistant turn's text.
  const std::string rendered =
      "<|user|>\nhi<|end|>\n<|assistant|>\nyo<|end|>\n<|user|>\nq<|end|>\n<|assistant|>\nok<|end|>\n";
  ASSERT_EQ(e.tokens.size(), rendered.size() + 1);
  EXPECT_EQ(e.tokens[0], ByteTokenizer::kBos);
  std::string targets;
  for (size_t i = 0; i < e.tokens.size(); ++i) {
    if (i > 0) EXPECT_EQ(e.tokens[i], static_cast<unsigned char>(rendered[i - 1]));
    if (e.loss_mask[i]) targets += static_cast<char>(e.tokens[i]);
  }
  EXPECT_EQ(targets, "ok<|end|>\n");
  EXPECT_EQ(e.prompt_tokens, static_cast<int64_t>(rendered.find("ok")) + 1);
}

TEST_F(ChatDatasetTest, ConversationsWithoutTargetsOrTemplateAreRefusedByLine) {
  absl::Status st = ParseJsonlDataset(
      "{\"text\":\"x\"}\n" R"({"messages":[{"role":"user","content":"hi"}]})", kTok, {}, &chat_).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("line 2: "), std::string::npos) << st;
  EXPECT_NE(std::string(st.message()).find("no assistant message"), std::string::npos) << st;

  st = ParseJsonlDataset(R"({"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"a"}]})",
                         kTok)
           .status();  // no chat template given
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("chat template"), std::string::npos) << st;

  ExpectLineError(R"({"messages":[],"text":"a"})", 1, "cannot be combined");
  st = ParseJsonlDataset(R"({"messages":[{"role":"wizard","content":"hi"},{"role":"assistant","content":"a"}]})",
                         kTok, {}, &chat_)
           .status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("messages[0]"), std::string::npos) << st;
}


// A SentencePiece-style tokenizer (Metaspace prefix, byte fallback) with a Mistral-style template, where
// the assistant's text follows "[/INST]" with no space: tokenizing segment by segment would add a "▁"
// prefix that the served tokenization does not have. The example's tokens must be exactly the whole
// rendering's, and the targets the assistant's answer and its EOS.
TEST(ChatDatasetHfTest, TokensAreTheWholeRenderingsAndTargetsTheAnswers) {
  const char* src = std::getenv("TESSERA_SOURCE_DIR");
  absl::StatusOr<std::unique_ptr<HfTokenizer>> tok =
      HfTokenizer::Create(std::string(src ? src : ".") + "/tests/fixtures/tokenizers/llama2_sentencepiece");
  ASSERT_TRUE(tok.ok()) << tok.status();
  absl::StatusOr<std::unique_ptr<chat::ChatTemplate>> tpl = chat::ChatTemplate::Create(
      "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + "
      "' [/INST]' }}{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}");
  ASSERT_TRUE(tpl.ok()) << tpl.status();
  DatasetChat chat;
  chat.chat_template = tpl->get();
  chat.options.bos_token = "<s>";
  chat.options.eos_token = "</s>";
  const nlohmann::ordered_json messages = nlohmann::ordered_json::parse(
      R"([{"role":"user","content":"Sort: b a"},{"role":"assistant","content":"a b"},)"
      R"({"role":"user","content":"Again: d c"},{"role":"assistant","content":"c d"}])");
  absl::StatusOr<TokenizedExample> ex = TokenizeChat(messages, **tok, chat);
  ASSERT_TRUE(ex.ok()) << ex.status();
  absl::StatusOr<std::string> rendered = (*tpl)->Render(messages, chat.options);
  ASSERT_TRUE(rendered.ok());
  absl::StatusOr<std::vector<int32_t>> whole = (*tok)->EncodeText(*rendered, /*add_special_tokens=*/false);
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(ex->tokens, *whole);
  std::vector<int32_t> targets;
  for (size_t i = 0; i < ex->tokens.size(); ++i) {
    if (ex->loss_mask[i]) targets.push_back(ex->tokens[i]);
  }
  EXPECT_EQ((*tok)->Decode(targets, /*skip_special_tokens=*/false), "a b</s>c d</s>");
  EXPECT_GT(ex->prompt_tokens, 0);
  EXPECT_EQ(ex->loss_mask[ex->prompt_tokens - 1], 0);
  EXPECT_EQ(ex->loss_mask[ex->prompt_tokens], 1);
}

}  // namespace
}  // namespace tessera::data
