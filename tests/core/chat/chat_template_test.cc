// ChatTemplate: transformers' inputs (None keys dropped, reasoning aliases, empty conversation),
// the builtin:tiny template, and RenderForTraining's segments and validation.
#include "core/chat/chat_template.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/chat/chat_template_loader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tessera::chat {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::ordered_json;

// ChatML as Qwen2.5 renders it without tools (prefix-stable).
constexpr char kChatML[] =
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

std::unique_ptr<ChatTemplate> MustCreate(const std::string& src) {
  auto t = ChatTemplate::Create(src);
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(*t);
}

std::string Join(const std::vector<ChatSegment>& segs) {
  std::string s;
  for (const auto& g : segs) s += g.text;
  return s;
}

TEST(ChatTemplateTest, BuiltinTinyFormat) {
  auto t = BuiltinTinyChatTemplate();
  ChatRenderOptions opts;
  opts.add_generation_prompt = true;
  auto out = t->Render(json::parse(R"([{"role":"system","content":"Be terse."},{"role":"user","content":"Hi"}])"), opts);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<|system|>\nBe terse.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n");
  auto bad = t->Render(json::parse(R"([{"role":"robot","content":"Hi"}])"), opts);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "builtin:tiny chat: role must be system, user or assistant, not robot");
  for (char c : BuiltinTinyChatTemplateSource()) EXPECT_LT(static_cast<unsigned char>(c), 0x80);
}

TEST(ChatTemplateTest, EmptyConversationIsInvalid) {
  auto t = MustCreate(kChatML);
  auto out = t->Render(json::array(), ChatRenderOptions());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  auto not_obj = t->Render(json::parse(R"([{"role":"user","content":"a"}, 3])"), ChatRenderOptions());
  ASSERT_FALSE(not_obj.ok());
  EXPECT_THAT(std::string(not_obj.status().message()), HasSubstr("messages[1]"));
}

TEST(ChatTemplateTest, NullKeysAreDroppedAndReasoningAliased) {
  auto t = MustCreate(
      "{% for m in messages %}{{ m.name is defined }}|{{ m.thinking }}|{{ m.reasoning_content }}|{{ m | list | join(',') }};"
      "{% endfor %}");
  auto out = t->Render(json::parse(R"([{"role":"user","content":"a","name":null},
                                       {"role":"assistant","content":"b","reasoning":"why"}])"),
                       ChatRenderOptions());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "False|||role,content;False|why|why|thinking,role,content,reasoning,reasoning_content;");
}

TEST(ChatTemplateTest, VariablesAsTransformersPassesThem) {
  auto t = MustCreate("{{ bos_token }}|{{ eos_token }}|{{ tools }}|{{ documents }}|{{ add_generation_prompt }}|"
                      "{{ pad_token is defined }}|{{ flag }}");
  ChatRenderOptions opts;
  opts.bos_token = "<s>";
  opts.extra = json::parse(R"({"flag": 1.5, "eos_token": "override"})");
  opts.eos_token = "</s>";
  auto out = t->Render(json::parse(R"([{"role":"user","content":"a"}])"), opts);
  ASSERT_TRUE(out.ok()) << out.status();
  // kwargs win over special tokens, as {**special_tokens_map, **kwargs} does.
  EXPECT_EQ(*out, "<s>|override|None|None|False|False|1.5");
}

TEST(ChatTemplateTest, PlainJsonOverloadRenders) {
  auto t = MustCreate(kChatML);
  auto out = t->Render(nlohmann::json::parse(R"([{"role":"user","content":"hé"}])"), ChatRenderOptions());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<|im_start|>user\nhé<|im_end|>\n");
}

TEST(RenderForTrainingTest, AssistantTurnsCarryTheLoss) {
  auto t = MustCreate(kChatML);
  json msgs = json::parse(R"([{"role":"system","content":"S"},{"role":"user","content":"U1"},
                              {"role":"assistant","content":"A1"},{"role":"user","content":"U2"},
                              {"role":"assistant","content":"A2","weight":0},{"role":"user","content":"U3"},
                              {"role":"assistant","content":"A3","weight":1}])");
  auto segs = t->RenderForTraining(msgs, ChatRenderOptions());
  ASSERT_TRUE(segs.ok()) << segs.status();
  json no_weight = msgs;
  for (auto& m : no_weight) m.erase("weight");
  auto full = t->Render(no_weight, ChatRenderOptions());
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(Join(*segs), *full);
  std::vector<std::pair<std::string, bool>> got;
  for (const auto& s : *segs) got.emplace_back(s.text, s.loss);
  std::vector<std::pair<std::string, bool>> want = {
      {"<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\n", false},
      {"A1<|im_end|>\n", true},
      {"<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n<|im_start|>user\nU3<|im_end|>\n"
       "<|im_start|>assistant\n",
       false},
      {"A3<|im_end|>\n", true}};
  EXPECT_EQ(got, want);
}

TEST(RenderForTrainingTest, ValidatesMessagesNamingTheIndex) {
  auto t = MustCreate(kChatML);
  struct Case {
    const char* msgs;
    const char* message;
  } cases[] = {
      {R"([{"role":"user","content":"a"},{"role":"bot","content":"b"}])", "messages[1]: unknown role \"bot\""},
      {R"([{"role":"user","content":"a"},{"role":"assistant"}])", "messages[1]: \"content\" must be a string"},
      {R"([{"role":"user","content":"a"},{"role":"assistant","content":"b","weight":2}])", "messages[1]: \"weight\" must be 0 or 1"},
      {R"([{"role":"user","content":"a","weight":1},{"role":"assistant","content":"b"}])", "messages[0]: \"weight\" is only allowed"},
      {R"([{"content":"a"}])", "messages[0]: missing string \"role\""},
      {R"([{"role":"assistant","content":"a"}])", "messages[0]: a conversation cannot start with an assistant"},
      {R"([{"role":"user","content":"a"},{"role":"assistant","content":"b","weight":0}])", "no assistant message to train on"},
      {R"([])", "non-empty"},
  };
  for (const auto& c : cases) {
    auto segs = t->RenderForTraining(json::parse(c.msgs), ChatRenderOptions());
    ASSERT_FALSE(segs.ok()) << c.msgs;
    EXPECT_EQ(segs.status().code(), absl::StatusCode::kInvalidArgument) << c.msgs;
    EXPECT_THAT(std::string(segs.status().message()), HasSubstr(c.message)) << c.msgs;
  }
}

TEST(RenderForTrainingTest, PrefixUnstableTemplateIsRefused) {
  // Qwen3 keeps the <think> block only after the last user query, so an earlier assistant turn renders
  // differently once a later user message exists: no correct loss mask can be cut from it.
  const char* src = std::getenv("TESSERA_SOURCE_DIR");
  auto loaded = LoadChatTemplate(std::string(src ? src : ".") + "/tests/fixtures/chat/qwen3");
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  json msgs = json::parse(R"([{"role":"user","content":"q1"},
                              {"role":"assistant","content":"<think>\nhm\n</think>\n\na1"},
                              {"role":"user","content":"q2"},{"role":"assistant","content":"a2"}])");
  auto segs = (*loaded)->chat_template->RenderForTraining(msgs, (*loaded)->defaults);
  ASSERT_FALSE(segs.ok());
  EXPECT_EQ(segs.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(segs.status().message()), HasSubstr("not prefix-stable"));
  // Without reasoning it is stable, and the loss lands on the assistant text.
  json plain = json::parse(R"([{"role":"user","content":"q1"},{"role":"assistant","content":"a1"}])");
  auto ok = (*loaded)->chat_template->RenderForTraining(plain, (*loaded)->defaults);
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_EQ(ok->size(), 2u);
  EXPECT_FALSE((*ok)[0].loss);
  EXPECT_TRUE((*ok)[1].loss);
  EXPECT_THAT((*ok)[1].text, HasSubstr("a1<|im_end|>"));
}

TEST(RenderForTrainingTest, TemplateErrorsPropagate) {
  const char* src = std::getenv("TESSERA_SOURCE_DIR");
  auto loaded = LoadChatTemplate(std::string(src ? src : ".") + "/tests/fixtures/chat/mistral");
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  json msgs = json::parse(R"([{"role":"user","content":"a"},{"role":"user","content":"b"},{"role":"assistant","content":"c"}])");
  auto segs = (*loaded)->chat_template->RenderForTraining(msgs, (*loaded)->defaults);
  ASSERT_FALSE(segs.ok());
  EXPECT_THAT(std::string(segs.status().message()), HasSubstr("roles must alternate"));
}

}  // namespace
}  // namespace tessera::chat
