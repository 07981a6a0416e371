#include "core/sampling/stop_matcher.h"

#include <random>

#include "gtest/gtest.h"

namespace tessera {
namespace {

TEST(StopMatcher, NoStopsPassesEverythingThrough) {
  StopMatcher m({});
  EXPECT_FALSE(m.Feed("hello "));
  EXPECT_FALSE(m.Feed("world"));
  EXPECT_EQ(m.keep_bytes(), 11u);
  EXPECT_EQ(m.safe_bytes(), 11u);
  EXPECT_EQ(m.output(), "hello world");
  EXPECT_EQ(m.matched_stop(), -1);
}

TEST(StopMatcher, StopInsideOnePiece) {
  StopMatcher m({"\n\n"});
  EXPECT_TRUE(m.Feed("answer: 42\n\nnext question"));
  EXPECT_EQ(m.output(), "answer: 42");
  EXPECT_EQ(m.keep_bytes(), 10u);
  EXPECT_EQ(m.matched_stop(), 0);
  EXPECT_TRUE(m.Feed("more"));  // ignored after the stop
  EXPECT_EQ(m.output(), "answer: 42");
}

TEST(StopMatcher, StopSpanningSeveralTokens) {
  StopMatcher m({"</end>"});
  for (const char* piece : {"x = 1", "<", "/e", "n"}) EXPECT_FALSE(m.Feed(piece)) << piece;
  EXPECT_EQ(m.safe_bytes(), 5u) << "'</en' might still become the stop string";
  EXPECT_TRUE(m.Feed("d>tail"));
  EXPECT_EQ(m.output(), "x = 1");
  EXPECT_EQ(m.safe_bytes(), 5u);
}

TEST(StopMatcher, EarliestOfSeveralStopsWinsAndStopAtStartKeepsNothing) {
  StopMatcher m({"STOP", "ST", "", "xyz"});
  EXPECT_TRUE(m.Feed("abxyzST"));
  EXPECT_EQ(m.matched_stop(), 3);
  EXPECT_EQ(m.output(), "ab");
  StopMatcher longer({"ab", "abc"});
  EXPECT_TRUE(longer.Feed("zzabc"));
  EXPECT_EQ(longer.output(), "zz");
  EXPECT_EQ(longer.matched_stop(), 1) << "same start: the longer stop string";
  StopMatcher first({"Q:"});
  EXPECT_TRUE(first.Feed("Q: again"));
  EXPECT_EQ(first.keep_bytes(), 0u);
}

TEST(StopMatcher, FalseStartsAreReleased) {
  StopMatcher m({"abc"});
  EXPECT_FALSE(m.Feed("xa"));
  EXPECT_EQ(m.safe_bytes(), 1u);
  EXPECT_FALSE(m.Feed("b"));
  EXPECT_EQ(m.safe_bytes(), 1u);
  EXPECT_FALSE(m.Feed("d"));
  EXPECT_EQ(m.safe_bytes(), 4u);
  EXPECT_FALSE(m.Feed("aab"));  // "aab": the tail "ab" is still a candidate
  EXPECT_EQ(m.safe_bytes(), 5u);
  EXPECT_TRUE(m.Feed("c"));
  EXPECT_EQ(m.output(), "xabda");
}

TEST(StopMatcher, StopSplittingAUtf8Character) {
  const std::string stop = "\xE2\x82\xAC";  // the euro sign, fed one byte per token
  StopMatcher m({stop});
  EXPECT_FALSE(m.Feed("5 "));
  EXPECT_FALSE(m.Feed("\xE2"));
  EXPECT_FALSE(m.Feed("\x82"));
  EXPECT_TRUE(m.Feed("\xAC"));
  EXPECT_EQ(m.output(), "5 ");
}

// Any split of any text: the result equals cutting the whole text at the earliest stop occurrence, and
// the streamed safe prefix never reaches into that stop string.
TEST(StopMatcher, RandomSplitsAgreeWithWholeTextSearch) {
  std::mt19937 rng(99);
  const std::vector<std::string> stops = {"aba", "bb", "cab", "abcab"};
  for (int iter = 0; iter < 3000; ++iter) {
    std::string text(rng() % 24, 'a');
    for (char& c : text) c = "abc"[rng() % 3];
    size_t expect = text.size();
    for (const std::string& s : stops) expect = std::min(expect, text.find(s));
    StopMatcher m(stops);
    size_t pos = 0, last_safe = 0;
    while (pos < text.size() && !m.stopped()) {
      size_t len = 1 + rng() % 4;
      m.Feed(std::string_view(text).substr(pos, len));
      pos += len;
      ASSERT_GE(m.safe_bytes(), last_safe) << "safe prefix must only grow";
      ASSERT_LE(m.safe_bytes(), expect) << text;
      last_safe = m.safe_bytes();
    }
    EXPECT_EQ(m.stopped(), expect < text.size()) << text;
    EXPECT_EQ(m.keep_bytes(), expect) << text;
    EXPECT_EQ(m.output(), text.substr(0, expect));
  }
}

}  // namespace
}  // namespace tessera
