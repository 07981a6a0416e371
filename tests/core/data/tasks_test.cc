#include "core/data/tasks.h"

#include <algorithm>
#include <map>
#include <regex>
#include <set>

#include "gtest/gtest.h"

namespace tessera::data {
namespace {

TEST(TasksTest, UnknownTaskIsNotFound) {
  auto t = Task::Create("nope", 1);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(t.status().message().find("cipher"), std::string_view::npos);
}

TEST(TasksTest, CipherIsADerangementAvoidingShiftAndDependsOnSecret) {
  auto a = Task::Create("cipher", 1);
  auto b = Task::Create("cipher", 2);
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string& m = a->letter_map();
  ASSERT_EQ(m.size(), 26u);
  EXPECT_EQ(std::set<char>(m.begin(), m.end()).size(), 26u);
  for (int i = 0; i < 26; ++i) {
    EXPECT_NE(m[i], 'a' + i);
    EXPECT_NE(m[i], 'a' + (i + 1) % 26);
  }
  EXPECT_NE(a->letter_map(), b->letter_map());
  for (const Example& e : a->Generate(3, 100)) {
    std::smatch sm;
    ASSERT_TRUE(std::regex_match(e.prompt, sm, std::regex(R"(secret\(([a-z]{5})\)=)"))) << e.prompt;
    std::string in = sm[1];
    ASSERT_EQ(e.completion.size(), 5u);
    for (int i = 0; i < 5; ++i) EXPECT_EQ(e.completion[i], m[in[i] - 'a']);
    // Not solvable by copying the input (every letter differs).
    for (int i = 0; i < 5; ++i) EXPECT_NE(e.completion[i], in[i]);
  }
}

TEST(TasksTest, GenerationIsDeterministic) {
  for (const std::string& name : Task::Names()) {
    auto t = Task::Create(name, 42);
    ASSERT_TRUE(t.ok()) << name;
    auto x = t->Generate(9, 50), y = t->Generate(9, 50), z = t->Generate(10, 50);
    ASSERT_EQ(x.size(), 50u);
    for (int i = 0; i < 50; ++i) {
      EXPECT_EQ(x[i].prompt, y[i].prompt);
      EXPECT_EQ(x[i].completion, y[i].completion);
    }
    int same = 0;
    for (int i = 0; i < 50; ++i) same += x[i].prompt == z[i].prompt;
    EXPECT_LT(same, 10) << name;
  }
}

TEST(TasksTest, DatePrivateAndModFnCheckers) {
  auto d = Task::Create("date_private", 5);
  ASSERT_TRUE(d.ok());
  for (const Example& e : d->Generate(1, 50)) {
    std::smatch sm;
    ASSERT_TRUE(std::regex_match(e.prompt, sm,
                                 std::regex(R"(date private\((\d{4})-(\d{2})-(\d{2})\)=)")));
    int year = std::stoi(sm[1]), month = std::stoi(sm[2]);
    std::string want = sm[3].str() + d->letter_map()[month - 1] + std::to_string(year % 100 + 100).substr(1);
    EXPECT_EQ(e.completion, want);
    EXPECT_TRUE(Task::IsCorrect(e, want));
    EXPECT_FALSE(Task::IsCorrect(e, want + "\n"));
  }
  auto f = Task::Create("modfn", 5);
  ASSERT_TRUE(f.ok());
  // The coefficients are secret, but the map is linear mod 97: f(x,y) = f(x,0) + f(0,y) mod 97.
  std::map<std::pair<int, int>, int> values;
  for (const Example& e : f->Generate(2, 3000)) {
    std::smatch sm;
    ASSERT_TRUE(std::regex_match(e.prompt, sm, std::regex(R"(f\((\d+),(\d+)\)=)")));
    int v = std::stoi(e.completion);
    ASSERT_GE(v, 0);
    ASSERT_LT(v, 97);
    values[{std::stoi(sm[1]), std::stoi(sm[2])}] = v;
  }
  int checked = 0;
  for (const auto& [xy, v] : values) {
    auto a = values.find({xy.first, 0}), b = values.find({0, xy.second});
    if (a != values.end() && b != values.end()) {
      EXPECT_EQ(v, (a->second + b->second) % 97);
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
}


TEST(TasksTest, SuiteTasksHaveDistinctDeterministicSplits) {
  const auto names = Task::Names();
  ASSERT_GE(names.size(), 8u);
  // modfn is retired from the suite (not learnable by the tiny model; tasks.h) but still made.
  EXPECT_EQ(std::find(names.begin(), names.end(), "modfn"), names.end());
  EXPECT_TRUE(Task::Create("modfn", 1).ok());
  for (const std::string& h : Task::HeldOutNames()) {
    EXPECT_NE(std::find(names.begin(), names.end(), h), names.end()) << h;
  }
  for (const std::string& name : names) {
    auto t = Task::Create(name, 7);
    ASSERT_TRUE(t.ok()) << name;
    TaskSplits a = t->Splits(40, 10, 10), b = t->Splits(40, 10, 10);
    ASSERT_EQ(a.train.size(), 40u);
    ASSERT_EQ(a.validation.size(), 10u);
    ASSERT_EQ(a.test.size(), 10u);
    for (size_t i = 0; i < 10; ++i) {
      EXPECT_EQ(a.test[i].prompt, b.test[i].prompt) << name;
      EXPECT_EQ(a.test[i].completion, b.test[i].completion) << name;
    }
    int copies = 0;
    std::set<std::string> completions;
    for (const Example& e : a.train) {
      EXPECT_FALSE(e.completion.empty()) << name;
      // The completion is never the prompt's argument copied.
      copies += e.prompt.find(e.completion) != std::string::npos;
      completions.insert(e.completion);
    }
    EXPECT_LE(copies, 2) << name;
    EXPECT_GE(completions.size(), 4u) << name;  // not a constant answer
    // Another tenant's secret gives other answers to the same prompts.
    auto other = Task::Create(name, 8);
    auto mine = t->Generate(5, 40), theirs = other->Generate(5, 40);
    int differ = 0;
    for (size_t i = 0; i < mine.size(); ++i) {
      ASSERT_EQ(mine[i].prompt, theirs[i].prompt) << name;  // inputs come from the seed only
      differ += mine[i].completion != theirs[i].completion;
    }
    EXPECT_GT(differ, 20) << name;
  }
}

TEST(TasksTest, ExamplesOfEachKind) {
  Rng rng(3);
  auto rr = Task::Create("rotrev", 1);
  Example e = rr->Make(rng);
  ASSERT_EQ(e.prompt.substr(0, 3), "rr(");
  const std::string in = e.prompt.substr(3, 4);
  const int k = (e.completion[0] - in[3] + 26) % 26;
  for (int i = 0; i < 4; ++i) EXPECT_EQ(e.completion[i], 'a' + (in[3 - i] - 'a' + k) % 26);
  EXPECT_GE(k, 3);

  auto js = Task::Create("record_json", 1);
  EXPECT_TRUE(std::regex_match(js->Make(rng).completion,
                               std::regex(R"(\{"[a-z]{3}":"[a-z]+","[a-z]{3}":[0-9]+\})")));
  auto st = Task::Create("style", 1);
  EXPECT_TRUE(std::regex_match(st->Make(rng).completion, std::regex(R"(([A-Z][a-z]*[~|+;:_]){3}[a-z]{2})")));
  auto cl = Task::Create("classify", 1);
  std::set<std::string> labels;
  for (const Example& x : cl->Generate(1, 200)) labels.insert(x.completion);
  EXPECT_EQ(labels, (std::set<std::string>{"spam", "ham", "info", "urgent"}));
  // digitfn: one secret affine map mod 10 for every digit position, a permutation of the digits.
  auto dg = Task::Create("digitfn", 1);
  std::map<char, char> digit_map;
  for (const Example& x : dg->Generate(1, 200)) {
    std::smatch sm;
    ASSERT_TRUE(std::regex_match(x.prompt, sm, std::regex(R"(g\((\d{4})\)=)")));
    ASSERT_EQ(x.completion.size(), 4u);
    for (int i = 0; i < 4; ++i) {
      auto [it, fresh] = digit_map.emplace(sm[1].str()[i], x.completion[i]);
      EXPECT_EQ(it->second, x.completion[i]);
    }
  }
  ASSERT_EQ(digit_map.size(), 10u);
  std::set<char> images;
  for (const auto& [d, v] : digit_map) images.insert(v);
  EXPECT_EQ(images.size(), 10u);
  const int b = digit_map['0'] - '0', a = (digit_map['1'] - '0' - b + 10) % 10;
  EXPECT_TRUE(a == 3 || a == 7 || a == 9) << a;
  for (const auto& [d, v] : digit_map) EXPECT_EQ(v - '0', (a * (d - '0') + b) % 10);
  // record_kv: the three fields under three secret keys, in a secret order that never changes.
  auto kv = Task::Create("record_kv", 1);
  std::string layout;
  for (const Example& x : kv->Generate(1, 50)) {
    std::smatch sm;
    ASSERT_TRUE(std::regex_match(x.prompt, sm, std::regex(R"(row\(([a-z]+),([a-z]+),(\d+)\)=)")));
    std::string shape = x.completion;
    for (int f = 1; f <= 3; ++f) {
      const std::string v = sm[f].str();
      const size_t at = shape.find("=" + v);
      ASSERT_NE(at, std::string::npos) << x.completion;
      shape.replace(at + 1, v.size(), std::string(1, static_cast<char>('0' + f)));
    }
    EXPECT_TRUE(std::regex_match(shape, std::regex(R"([a-z]{3}=\d;[a-z]{3}=\d;[a-z]{3}=\d)"))) << shape;
    if (layout.empty()) layout = shape;
    EXPECT_EQ(shape, layout);
  }
  // pig: first letter to the end, then the same secret 2-letter suffix on every word.
  auto pig = Task::Create("pig", 1);
  Example px = pig->Make(rng);
  std::smatch pm;
  ASSERT_TRUE(std::regex_match(px.prompt, pm, std::regex(R"(pig\(([a-z]+) ([a-z]+) ([a-z]+)\)=)")));
  const std::string suffix = px.completion.substr(px.completion.size() - 2);
  std::string want;
  for (int i = 1; i <= 3; ++i) {
    const std::string w = pm[i].str();
    want += (i > 1 ? " " : "") + w.substr(1) + w[0] + suffix;
  }
  EXPECT_EQ(px.completion, want);

  auto facts = Task::Create("facts", 1);
  std::map<std::string, std::string> seen;
  for (const Example& x : facts->Generate(1, 300)) {
    auto [it, fresh] = seen.emplace(x.prompt, x.completion);
    EXPECT_EQ(it->second, x.completion);  // a fact is always the same answer
  }
}

TEST(TasksTest, ChatRecallIsMultiTurnAndWritesMessages) {
  auto t = Task::Create("chat_recall", 1);
  ASSERT_TRUE(t.ok());
  auto ex = t->Generate(1, 2);
  ASSERT_EQ(ex[0].turns.size(), 3u);
  const std::string word = ex[0].turns[0].substr(5);
  std::string want = word;
  for (char& c : want) c = t->letter_map()[c - 'a'];
  EXPECT_EQ(ex[0].completion, want);
  EXPECT_EQ(ex[0].prompt, "u:keep " + word + "\na:ok\nu:back?\na:");
  const std::string jsonl = MessagesJsonl(ex);
  const std::string first = jsonl.substr(0, jsonl.find('\n'));
  EXPECT_EQ(first, "{\"messages\":[{\"content\":\"keep " + word +
                       "\",\"role\":\"user\"},{\"content\":\"ok\",\"role\":\"assistant\"},"
                       "{\"content\":\"back?\",\"role\":\"user\"},{\"content\":\"" +
                       want + "\",\"role\":\"assistant\"}]}");
}

}  // namespace
}  // namespace tessera::data
