#include "core/data/corpus.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tessera::data {
namespace {

constexpr const char* kWords[] = {
    "apple", "river", "stone", "cloud", "green", "table", "light", "music", "water", "plant",
    "house", "paper", "smile", "tiger", "bread", "chair", "dream", "earth", "flame", "grass",
    "heart", "lemon", "money", "night", "ocean", "piano", "queen", "robot", "sugar", "train",
    "cat",   "dog",   "sun",   "map",   "key",   "box",   "red",   "blue",  "fox",   "owl",
    "garden", "market", "silver", "window", "yellow", "castle", "forest", "bridge", "planet"};
constexpr const char* kNames[] = {"alice", "bob",  "carol", "dave", "erin", "frank",
                                  "grace", "heidi", "ivan", "judy", "mallory", "oscar"};
constexpr const char* kCities[] = {"lima", "paris", "oslo", "tokyo", "cairo", "quito",
                                   "rome", "dublin", "seoul", "perth", "delhi", "bern"};
constexpr const char* kColors[] = {"red", "blue", "green", "black", "white", "golden", "small", "old"};
constexpr const char* kNouns[] = {"fox", "cat", "farmer", "child", "river", "robot", "teacher",
                                  "bird", "ship", "king", "dog", "train"};
constexpr const char* kVerbs[] = {"sees", "follows", "finds", "paints", "visits", "helps", "likes",
                                  "carries"};
constexpr const char* kPlaces[] = {"the market", "the hill", "the old bridge", "the forest",
                                   "the harbor", "the school", "the garden"};
constexpr const char* kMonths[] = {"January", "February", "March",     "April",   "May",      "June",
                                   "July",    "August",   "September", "October", "November",
                                   "December"};
constexpr const char* kVars[] = {"x", "y", "n", "total", "count", "value", "i", "acc"};

std::string Word(Rng& rng) {
  return rng.Bernoulli(0.5) ? std::string(rng.Pick(kWords)) : RandomLetters(rng, rng.Range(3, 7));
}

std::string Arithmetic(Rng& rng) {
  switch (rng.Uniform(3)) {
    case 0: {
      int a = rng.Range(0, 99), b = rng.Range(0, 99);
      return absl::StrCat(a, "+", b, "=", a + b);
    }
    case 1: {
      int a = rng.Range(0, 99), b = rng.Range(0, a);
      return absl::StrCat(a, "-", b, "=", a - b);
    }
    default: {
      int a = rng.Range(0, 12), b = rng.Range(0, 12);
      return absl::StrCat(a, "*", b, "=", a * b);
    }
  }
}

std::string FormatDate(const Date& d, int fmt) {
  switch (fmt) {
    case 0: return FormatIsoDate(d);
    case 1: return absl::StrFormat("%02d/%02d/%04d", d.month, d.day, d.year);
    case 2: return absl::StrFormat("%02d.%02d.%04d", d.day, d.month, d.year);
    case 3: return absl::StrFormat("%s %d, %d", kMonths[d.month - 1], d.day, d.year);
    default: return absl::StrFormat("%d %.3s %d", d.day, kMonths[d.month - 1], d.year);
  }
}
constexpr const char* kDateFormatNames[] = {"iso", "us", "eu", "long", "short"};

std::string Dates(Rng& rng) {
  Date d = RandomDate(rng);
  int from = rng.Uniform(5), to = rng.Uniform(5);
  if (to == from) to = (to + 1) % 5;
  return absl::StrCat("date ", kDateFormatNames[to], "(", FormatDate(d, from), ")=", FormatDate(d, to));
}

std::string Records(Rng& rng) {
  std::string name = rng.Pick(kNames), city = rng.Pick(kCities);
  int age = rng.Range(18, 90);
  std::string id = absl::StrCat(rng.Range(1000, 9999));
  std::string rec = absl::StrCat("rec{name=", name, ",age=", age, ",city=", city, ",id=", id, "}");
  switch (rng.Uniform(4)) {
    case 0: return absl::StrCat(rec, ".name=", name);
    case 1: return absl::StrCat(rec, ".age=", age);
    case 2: return absl::StrCat(rec, ".city=", city);
    default: return absl::StrCat(rec, ".id=", id);
  }
}

std::string Words(Rng& rng) {
  // Most inputs are exactly five random letters: the shape tenant tasks use.
  std::string w = rng.Bernoulli(0.6) ? RandomLetters(rng, 5) : Word(rng);
  std::string out = w;
  const char* op;
  switch (rng.Uniform(6)) {
    case 0: op = "copy"; break;
    case 5:
      op = "mirror";
      for (char& c : out) c = static_cast<char>('z' - (c - 'a'));
      break;
    case 1:
      op = "upper";
      for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      break;
    case 2: op = "reverse"; std::reverse(out.begin(), out.end()); break;
    case 3: op = "sort"; std::sort(out.begin(), out.end()); break;
    default:
      op = "shift";
      for (char& c : out) c = static_cast<char>('a' + (c - 'a' + 1) % 26);
      break;
  }
  return absl::StrCat(op, "(", w, ")=", out);
}

std::string Prose(Rng& rng) {
  std::string s;
  const int n = 1;
  for (int i = 0; i < n; ++i) {
    if (i) s += " ";
    absl::StrAppend(&s, "The ", rng.Pick(kColors), " ", rng.Pick(kNouns), " ", rng.Pick(kVerbs),
                    " the ", rng.Pick(kNouns), " at ", rng.Pick(kPlaces), ".");
  }
  return s;
}

std::string Code(Rng& rng) {
  std::string v = rng.Pick(kVars);
  int a = rng.Range(1, 9), b = rng.Range(0, 9);
  switch (rng.Uniform(4)) {
    case 0: return absl::StrCat("def f(", v, "):\n    return ", v, " * ", a, " + ", b);
    case 1: return absl::StrCat("for ", v, " in range(", a, "):\n    print(", v, ")");
    case 2: return absl::StrCat("int ", v, " = ", a, ";\nif (", v, " > ", b, ") { ", v, " = ", b, "; }");
    default: return absl::StrCat("let ", v, " = [", a, ", ", b, ", ", a + b, "];");
  }
}

}  // namespace

const char* DomainName(Domain d) {
  switch (d) {
    case Domain::kArithmetic: return "arithmetic";
    case Domain::kDates: return "dates";
    case Domain::kRecords: return "records";
    case Domain::kWords: return "words";
    case Domain::kProse: return "prose";
    case Domain::kCode: return "code";
  }
  return "?";
}

std::string RandomLetters(Rng& rng, int length) {
  std::string s(length, 'a');
  for (char& c : s) c = static_cast<char>('a' + rng.Uniform(26));
  return s;
}

Date RandomDate(Rng& rng) {
  return Date{static_cast<int>(rng.Range(1990, 2039)), static_cast<int>(rng.Range(1, 12)),
              static_cast<int>(rng.Range(1, 28))};
}

std::string FormatIsoDate(const Date& d) {
  return absl::StrFormat("%04d-%02d-%02d", d.year, d.month, d.day);
}

std::string GenerateDocument(Domain domain, Rng& rng) {
  switch (domain) {
    case Domain::kArithmetic: return Arithmetic(rng);
    case Domain::kDates: return Dates(rng);
    case Domain::kRecords: return Records(rng);
    case Domain::kWords: return Words(rng);
    case Domain::kProse: return Prose(rng);
    case Domain::kCode: return Code(rng);
  }
  return "";
}

std::vector<std::string> GenerateGeneralCorpus(uint64_t seed, int64_t num_docs) {
  // Cumulative weights in percent, in kAllDomains order.
  constexpr int kCumulative[] = {12, 24, 36, 76, 88, 100};
  Rng rng(DeriveSeed(seed, 0x636f72707573ull));
  std::vector<std::string> docs;
  docs.reserve(num_docs);
  for (int64_t i = 0; i < num_docs; ++i) {
    int r = static_cast<int>(rng.Uniform(100));
    int d = 0;
    while (r >= kCumulative[d]) ++d;
    docs.push_back(GenerateDocument(kAllDomains[d], rng));
  }
  return docs;
}

}  // namespace tessera::data
