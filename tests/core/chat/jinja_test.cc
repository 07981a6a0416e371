// The Jinja interpreter: lexer tokens, parse-time refusals (named), and rendering checked against
// jinja2 itself -- tests/fixtures/chat/jinja_cases.jsonl holds small templates rendered in transformers'
// exact environment by ops/fixtures/make_chat_fixtures.py.
#include <cstdlib>
#include <fstream>
#include <string>

#include "core/chat/chat_template.h"
#include "core/chat/jinja_lexer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tessera::chat {
namespace {

using ::testing::HasSubstr;

std::tm FixedNow() {
  std::tm tm{};
  tm.tm_year = 2025 - 1900;
  tm.tm_mon = 2;
  tm.tm_mday = 7;
  tm.tm_hour = 14;
  tm.tm_min = 5;
  tm.tm_sec = 9;
  tm.tm_wday = 5;
  tm.tm_yday = 65;
  return tm;
}

absl::StatusOr<std::string> RenderWith(const std::string& source, const nlohmann::ordered_json& vars) {
  absl::StatusOr<std::unique_ptr<ChatTemplate>> t = ChatTemplate::Create(source);
  if (!t.ok()) return t.status();
  ChatRenderOptions opts;
  opts.extra = vars.is_null() ? nlohmann::ordered_json::object() : vars;
  opts.now = FixedNow;
  return (*t)->Render(nlohmann::ordered_json::parse(R"([{"role": "user", "content": "x"}])"), opts);
}

TEST(JinjaLexerTest, TokenizesTagsAndLiterals) {
  auto toks = jinja::Lex("a{{ x.y[1] | f('s\\n', 2.5) }}{%- if not z -%} b {% endif %}");
  ASSERT_TRUE(toks.ok()) << toks.status();
  std::vector<std::string> seen;
  for (const auto& t : *toks) {
    switch (t.type) {
      case jinja::Tok::kData: seen.push_back("D:" + t.text); break;
      case jinja::Tok::kVarBegin: seen.push_back("{{"); break;
      case jinja::Tok::kVarEnd: seen.push_back("}}"); break;
      case jinja::Tok::kBlockBegin: seen.push_back("{%"); break;
      case jinja::Tok::kBlockEnd: seen.push_back("%}"); break;
      case jinja::Tok::kString: seen.push_back("S:" + t.text); break;
      case jinja::Tok::kInt: seen.push_back("I:" + std::to_string(t.ival)); break;
      case jinja::Tok::kFloat: seen.push_back("F:" + t.text); break;
      case jinja::Tok::kEof: seen.push_back("EOF"); break;
      default: seen.push_back(t.text);
    }
  }
  EXPECT_THAT(seen, ::testing::ElementsAre("D:a", "{{", "x", ".", "y", "[", "I:1", "]", "|", "f", "(", "S:s\n", ",",
                                           "F:2.5", ")", "}}", "{%", "if", "not", "z", "%}", "D:b ", "{%", "endif",
                                           "%}", "EOF"));
}

TEST(JinjaLexerTest, ReportsLineOfUnterminatedTag) {
  auto toks = jinja::Lex("line1\nline2 {{ x \n");
  ASSERT_FALSE(toks.ok());
  EXPECT_THAT(std::string(toks.status().message()), HasSubstr("missing }}"));
  auto str = jinja::Lex("{{ 'abc }}");
  ASSERT_FALSE(str.ok());
  EXPECT_THAT(std::string(str.status().message()), HasSubstr("unterminated string"));
}

// Every case of jinja_cases.jsonl, rendered or refused as jinja2 did.
TEST(JinjaParityTest, MatchesJinja2OnEveryCase) {
  const char* src = std::getenv("TESSERA_SOURCE_DIR");
  std::ifstream in(std::string(src ? src : ".") + "/tests/fixtures/chat/jinja_cases.jsonl");
  ASSERT_TRUE(in);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto c = nlohmann::ordered_json::parse(line);
    const std::string tmpl = c["template"].get<std::string>();
    SCOPED_TRACE(tmpl);
    absl::StatusOr<std::string> got = RenderWith(tmpl, c["vars"]);
    ++n;
    if (c.contains("text")) {
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(*got, c["text"].get<std::string>());
    } else {
      ASSERT_FALSE(got.ok()) << "jinja2 failed with \"" << c["error"] << "\" but we rendered: " << *got;
      EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
      if (c["raised"].get<bool>()) {
        EXPECT_EQ(got.status().message(), c["error"].get<std::string>());
      } else {
        EXPECT_THAT(std::string(got.status().message()), HasSubstr(c["error"].get<std::string>()));
      }
    }
  }
  EXPECT_GE(n, 50);
}

struct Refusal {
  const char* source;
  const char* message;
};

class RefusalTest : public ::testing::TestWithParam<Refusal> {};

TEST_P(RefusalTest, RefusedAtCreateNamingTheConstruct) {
  absl::StatusOr<std::unique_ptr<ChatTemplate>> t = ChatTemplate::Create(GetParam().source);
  ASSERT_FALSE(t.ok()) << GetParam().source;
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Constructs, RefusalTest,
    ::testing::Values(Refusal{"{% include 'other.jinja' %}", "line 1: unsupported tag 'include'"},
                      Refusal{"x\n{% filter upper %}a{% endfilter %}", "line 2: unsupported tag 'filter'"},
                      Refusal{"{% call 1 + 2 %}a{% endcall %}", "{% call %} needs a macro call"},
                      Refusal{"{% raw %}{{ x }}{% endraw %}", "unsupported tag 'raw'"},
                      Refusal{"{% do xs.append(1) %}", "unsupported tag 'do'"},
                      Refusal{"{% frobnicate %}", "unsupported tag 'frobnicate' (unknown tag)"},
                      Refusal{"{{ x | wordwrap(10) }}", "unsupported filter 'wordwrap'"},
                      Refusal{"{{ x | truncate(5) }}", "unsupported filter 'truncate'"},
                      Refusal{"{{ xs | map('wordcount') | list }}", "unsupported filter 'wordcount' (in map)"},
                      Refusal{"{{ xs | select('escaped') | list }}", "unsupported test 'escaped' (in select)"},
                      Refusal{"{% if x is escaped %}{% endif %}", "unsupported test 'escaped'"},
                      Refusal{"{{ x.isdigit() }}", "unsupported method 'isdigit'"},
                      Refusal{"{% set _ = xs.append(1) %}", "unsupported method 'append' (mutating"},
                      Refusal{"{{ d.update({'a': 1}) }}", "unsupported method 'update' (mutating"},
                      Refusal{"{{ cycler('a', 'b') }}", "unsupported global function 'cycler'"},
                      Refusal{"{{ lipsum() }}", "unsupported global function 'lipsum'"},
                      Refusal{"{{ helper(1) }}", "unsupported function 'helper'"},
                      Refusal{"{% for x in xs recursive %}{% endfor %}", "unsupported for-loop modifier 'recursive'"},
                      Refusal{"{{ f(*a, *b) }}{% macro f() %}{% endmacro %}", "repeated *args/**kwargs"},
                      Refusal{"{{ f(*a, 1) }}{% macro f() %}{% endmacro %}", "argument after *args/**kwargs"},
                      Refusal{"{% set x | upper %}a{% endset %}", "filter on a block set"},
                      Refusal{"{% break %}", "'break' outside of a for loop"},
                      Refusal{"{% macro m() %}{{ kwargs }}{% endmacro %}", "'kwargs' in a macro"},
                      Refusal{"{% macro m() %}{{ varargs | length }}{% endmacro %}", "'varargs' in a macro"},
                      Refusal{"{% for x in xs %}{% macro m() %}{{ x }}{% endmacro %}{% endfor %}",
                              "macro defined inside a for loop"},
                      Refusal{"{% if x %}a", "expected '{% endif %}'"},
                      Refusal{"{% endif %}", "unexpected tag 'endif'"}));

TEST(JinjaRenderTest, MacroDefinedLaterInTheTemplateIsCallable) {
  // The call site precedes the definition in the source but runs after it.
  auto out = RenderWith("{% macro a() %}[{{ b() }}]{% endmacro %}{% macro b() %}B{% endmacro %}{{ a() }}", {});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "[B]");
}

TEST(JinjaRenderTest, RaiseExceptionIsInvalidArgumentWithExactlyTheMessage) {
  auto out = RenderWith("{% if true %}\n{{ raise_exception('Roles must alternate!') }}\n{% endif %}", {});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out.status().message(), "Roles must alternate!");
}

TEST(JinjaRenderTest, OtherErrorsNameTheLine) {
  auto out = RenderWith("ok\n\n{{ d.a.b }}", {{"d", nlohmann::ordered_json::object()}});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().message(), "line 3: 'dict object' has no attribute 'a'");
}

TEST(JinjaRenderTest, NonAsciiCaseMappingIsRefusedNotGuessed) {
  // jinja2 gives "Ω"; full Unicode case tables are out of scope, so this is an error, never a wrong text.
  auto out = RenderWith("{{ 'ω' | upper }}", {});
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("U+03C9"));
  // Caseless scripts and Latin-1 are fine.
  auto ok = RenderWith("{{ '你好 ß é' | upper }}", {});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, "你好 SS É");
}

TEST(JinjaRenderTest, StrftimeNowUsesTheInjectedClock) {
  auto out = RenderWith("{{ strftime_now('%d %b %Y') }}", {});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "07 Mar 2025");
}

TEST(JinjaRenderTest, MacroRecursionIsBounded) {
  auto out = RenderWith("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", {});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted);
}

// Found probing the chat-template fuzz target with deep inputs: 100k nested parentheses overflowed the
// stack in the recursive parser. Nesting and expression height are bounded at parse time (so evaluation
// and freeing are too), with an error naming the line; ordinary depth still renders.
TEST(JinjaParseTest, DeepNestingIsRefusedNotAStackOverflow) {
  const int n = 100000;
  std::string nots, chain, blocks_open, blocks_close;
  for (int i = 0; i < n; ++i) {
    nots += "not ";
    chain += "1+";
    blocks_open += "{% if true %}";
    blocks_close += "{% endif %}";
  }
  for (const std::string& src :
       {"{{ " + std::string(n, '(') + "1" + std::string(n, ')') + " }}", "{{ " + std::string(n, '[') + std::string(n, ']') + " }}",
        "{{ " + nots + "1 }}", "{{ " + std::string(n, '-') + "1 }}", "{{ " + chain + "1 }}", "{{ " + chain + " }}",
        blocks_open + blocks_close, "{{ x" + std::string(n / 5, '|') + " }}"}) {
    absl::StatusOr<std::unique_ptr<ChatTemplate>> t = ChatTemplate::Create(src);
    ASSERT_FALSE(t.ok()) << src.substr(0, 40);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(t.status().message()), HasSubstr("line 1: ")) << t.status();
  }
  EXPECT_THAT(std::string(ChatTemplate::Create("{{ " + chain + "1 }}").status().message()),
              HasSubstr("nested too deeply"));
  auto ok = RenderWith("{{ " + std::string(40, '(') + "1 + 2" + std::string(40, ')') + " }}", {});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, "3");
}

TEST(JinjaRenderTest, IntegerOverflowIsRefusedNotWrapped) {
  for (const char* src : {"{{ 2 ** 70 }}", "{{ 9223372036854775807 + 1 }}", "{{ 4294967296 * 4294967296 }}"}) {
    auto out = RenderWith(src, {});
    ASSERT_FALSE(out.ok()) << src;
    EXPECT_THAT(std::string(out.status().message()), HasSubstr("integer overflow")) << src;
  }
  auto big = RenderWith("{{ n }}", {{"n", 18446744073709551615ull}});
  ASSERT_FALSE(big.ok());
  EXPECT_THAT(std::string(big.status().message()), HasSubstr("beyond 64 bits"));
}

TEST(JinjaRenderTest, RangeIsCappedAsInTheSandbox) {
  auto out = RenderWith("{{ range(200000) | length }}", {});
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("MAX_RANGE"));
}

// Found by the chat-template fuzz target: tojson(indent=277...7) allocated a string of that many
// spaces and threw std::bad_alloc out of Render. Widths and the results they multiply into are bounded
// (RESOURCE_EXHAUSTED naming the limit), and ordinary indents still render as json.dumps does.
TEST(JinjaRenderTest, HugeIndentsAreRefusedNotAllocated) {
  const std::string huge = "27777777777777777";
  const std::vector<std::string> sources = {
      "{{ d | tojson(indent=" + huge + ") }}",
      "{{ 'a\nb' | indent(" + huge + ") }}",
      // Each width is allowed alone; what they build is not: 50 MB of indentation per level, 3 levels deep.
      "{{ [[[1]]] | tojson(indent=50000000) }}",
      "{{ [1, 2, 3] | tojson(separators=['" + std::string(1000, ',') + "' * 40000, ': ']) }}",
      "{{ ('x\n' * 100) | indent(1000000) }}"};
  for (const std::string& src : sources) {
    auto out = RenderWith(src, {{"d", {{"a", 1}}}});
    ASSERT_FALSE(out.ok()) << src.substr(0, 60);
    EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted) << out.status();
    EXPECT_THAT(std::string(out.status().message()), HasSubstr("MiB")) << out.status();
  }
  auto ok = RenderWith("{{ d | tojson(indent=2) }}|{{ 'a\nb' | indent(3) }}", {{"d", {{"a", 1}}}});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, "{\n  \"a\": 1\n}|a\n   b");
}

}  // namespace
}  // namespace tessera::chat
