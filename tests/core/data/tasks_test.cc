#include "core/data/tasks.h"

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

}  // namespace
}  // namespace tessera::data
