#include "core/data/tasks.h"

#include <cctype>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/data/corpus.h"
#include "nlohmann/json.hpp"

namespace tessera::data {
namespace {

// Source words of lexicon and style (plain English words the corpus' prose uses).
constexpr const char* kSourceWords[] = {"red",   "blue",  "green", "old",   "small", "fox",
                                        "cat",   "robot", "river", "child", "sees",  "finds",
                                        "likes", "helps", "the",   "a",     "hill",  "bridge",
                                        "market", "day",  "night", "runs",  "sings", "calm"};
constexpr int kNumSourceWords = sizeof(kSourceWords) / sizeof(kSourceWords[0]);
constexpr const char* kLabels[] = {"spam", "ham", "info", "urgent"};
constexpr const char* kPeople[] = {"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"};
constexpr int kNumFacts = 48;
constexpr const char* kCities[] = {"lima", "oslo", "rome", "kyiv", "doha", "bern", "riga", "baku"};

// A permutation of a-z in which no letter maps to itself or to its successor (so copy()/shift()
// solve nothing).
std::string Derangement(Rng& rng) {
  std::vector<char> letters(26);
  for (int i = 0; i < 26; ++i) letters[i] = static_cast<char>('a' + i);
  for (;;) {
    rng.Shuffle(letters);
    bool ok = true;
    for (int i = 0; i < 26 && ok; ++i) ok = letters[i] != 'a' + i && letters[i] != 'a' + (i + 1) % 26;
    if (ok) break;
  }
  return std::string(letters.begin(), letters.end());
}

// `n` distinct random lowercase words of length in [lo, hi].
std::vector<std::string> DistinctWords(Rng& rng, int n, int lo, int hi) {
  std::set<std::string> seen;
  std::vector<std::string> out;
  while (static_cast<int>(out.size()) < n) {
    std::string w = RandomLetters(rng, static_cast<int>(rng.Range(lo, hi)));
    if (seen.insert(w).second) out.push_back(w);
  }
  return out;
}

std::string Capitalize(std::string w) {
  if (!w.empty()) w[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(w[0])));
  return w;
}

}  // namespace

std::vector<std::string> Task::Names() {
  return {"cipher",   "date_private", "digitfn", "rotrev",      "lexicon",   "facts",
          "classify", "record_json",  "style",   "chat_recall", "record_kv", "pig"};
}

std::vector<std::string> Task::HeldOutNames() { return {"style", "chat_recall", "record_kv", "pig"}; }

absl::StatusOr<Task> Task::Create(std::string_view name, uint64_t secret) {
  static const std::pair<const char*, Kind> kKinds[] = {
      {"cipher", Kind::kCipher},     {"date_private", Kind::kDatePrivate},
      {"modfn", Kind::kModFn},       {"rotrev", Kind::kRotRev},
      {"lexicon", Kind::kLexicon},   {"facts", Kind::kFacts},
      {"classify", Kind::kClassify}, {"record_json", Kind::kRecordJson},
      {"style", Kind::kStyle},       {"chat_recall", Kind::kChatRecall},
      {"digitfn", Kind::kDigitFn},   {"record_kv", Kind::kRecordKv},
      {"pig", Kind::kPig}};
  for (const auto& [n, kind] : kKinds) {
    if (name == n) return Task(std::string(name), kind, secret);
  }
  return absl::NotFoundError(absl::StrCat("unknown task '", std::string(name), "' (known: ",
                                          absl::StrJoin(Names(), ", "), ")"));
}

Task::Task(std::string name, Kind kind, uint64_t secret)
    : name_(std::move(name)), kind_(kind), secret_(secret) {
  Rng rng(DeriveSeed(secret, 0x7461736bull));
  switch (kind_) {
    case Kind::kCipher:
    case Kind::kChatRecall:
      map_ = Derangement(rng);
      break;
    case Kind::kDatePrivate: {
      std::vector<char> letters(26);
      for (int i = 0; i < 26; ++i) letters[i] = static_cast<char>('a' + i);
      rng.Shuffle(letters);
      map_.assign(letters.begin(), letters.begin() + 12);
      break;
    }
    case Kind::kModFn:
      coef_a_ = static_cast<int>(rng.Range(2, 96));
      coef_b_ = static_cast<int>(rng.Range(2, 96));
      break;
    case Kind::kRotRev:
      coef_a_ = static_cast<int>(rng.Range(3, 22));
      break;
    case Kind::kLexicon:
      words_ = DistinctWords(rng, kNumSourceWords, 3, 5);
      break;
    case Kind::kFacts:
      words_ = DistinctWords(rng, kNumFacts, 3, 3);
      break;
    case Kind::kClassify:
      // Every label gets at least one letter: letters are dealt round-robin after a shuffle.
      map_.assign(26, '0');
      {
        std::vector<int> order(26);
        for (int i = 0; i < 26; ++i) order[i] = i;
        rng.Shuffle(order);
        for (int i = 0; i < 26; ++i) map_[order[i]] = static_cast<char>('0' + i % 4);
      }
      break;
    case Kind::kRecordJson:
      words_ = DistinctWords(rng, 2, 3, 3);
      break;
    case Kind::kDigitFn: {
      constexpr int kUnits[] = {3, 7, 9};  // coprime to 10: the map is a permutation of the digits
      coef_a_ = kUnits[rng.Uniform(3)];
      coef_b_ = static_cast<int>(rng.Range(1, 9));
      break;
    }
    case Kind::kRecordKv:
      words_ = DistinctWords(rng, 3, 3, 3);
      order_ = {0, 1, 2};
      rng.Shuffle(order_);
      break;
    case Kind::kPig:
      words_ = {RandomLetters(rng, 2)};
      break;
    case Kind::kStyle: {
      const char kSeparators[] = "~|+;:_";
      map_ = std::string(1, kSeparators[rng.Uniform(6)]) + RandomLetters(rng, 2);
      break;
    }
  }
}

Example Task::Make(Rng& rng) const {
  switch (kind_) {
    case Kind::kCipher: {
      std::string w = RandomLetters(rng, 5);
      std::string out = w;
      for (char& c : out) c = map_[c - 'a'];
      return {absl::StrCat("secret(", w, ")="), out, {}};
    }
    case Kind::kDatePrivate: {
      Date d = RandomDate(rng);
      return {absl::StrCat("date private(", FormatIsoDate(d), ")="),
              absl::StrFormat("%02d%c%02d", d.day, map_[d.month - 1], d.year % 100), {}};
    }
    case Kind::kModFn: {
      int x = static_cast<int>(rng.Range(0, 96)), y = static_cast<int>(rng.Range(0, 96));
      return {absl::StrCat("f(", x, ",", y, ")="), absl::StrCat((coef_a_ * x + coef_b_ * y) % 97), {}};
    }
    case Kind::kRotRev: {
      std::string w = RandomLetters(rng, 4);
      std::string out(w.rbegin(), w.rend());
      for (char& c : out) c = static_cast<char>('a' + (c - 'a' + coef_a_) % 26);
      return {absl::StrCat("rr(", w, ")="), out, {}};
    }
    case Kind::kLexicon: {
      std::vector<std::string> in, out;
      for (int i = 0; i < 3; ++i) {
        const int w = static_cast<int>(rng.Uniform(kNumSourceWords));
        in.push_back(kSourceWords[w]);
        out.push_back(words_[w]);
      }
      return {absl::StrCat("say(", absl::StrJoin(in, " "), ")="), absl::StrJoin(out, " "), {}};
    }
    case Kind::kFacts: {
      const int item = static_cast<int>(rng.Uniform(kNumFacts));
      return {absl::StrFormat("code of item%02d=", item), words_[item], {}};
    }
    case Kind::kClassify: {
      std::string w = RandomLetters(rng, 5);
      return {absl::StrCat("label(", w, ")="), kLabels[map_[w[0] - 'a'] - '0'], {}};
    }
    case Kind::kRecordJson: {
      const std::string name = rng.Pick(kPeople);
      const int age = static_cast<int>(rng.Range(18, 90));
      return {absl::StrCat("rec(", name, ",", age, ")="),
              absl::StrCat("{\"", words_[0], "\":\"", name, "\",\"", words_[1], "\":", age, "}"), {}};
    }
    case Kind::kStyle: {
      std::vector<std::string> in, out;
      for (int i = 0; i < 3; ++i) {
        const char* w = kSourceWords[rng.Uniform(kNumSourceWords)];
        in.push_back(w);
        out.push_back(Capitalize(w));
      }
      const std::string sep = map_.substr(0, 1);
      return {absl::StrCat("tone(", absl::StrJoin(in, " "), ")="),
              absl::StrCat(absl::StrJoin(out, sep), sep, map_.substr(1)), {}};
    }
    case Kind::kDigitFn: {
      std::string in;
      for (int i = 0; i < 4; ++i) in.push_back(static_cast<char>('0' + rng.Uniform(10)));
      std::string out = in;
      for (char& c : out) c = static_cast<char>('0' + (coef_a_ * (c - '0') + coef_b_) % 10);
      return {absl::StrCat("g(", in, ")="), out, {}};
    }
    case Kind::kRecordKv: {
      const std::string fields[3] = {rng.Pick(kPeople), rng.Pick(kCities),
                                     absl::StrCat(rng.Range(18, 90))};
      std::vector<std::string> parts;
      for (int f : order_) parts.push_back(absl::StrCat(words_[f], "=", fields[f]));
      return {absl::StrCat("row(", fields[0], ",", fields[1], ",", fields[2], ")="),
              absl::StrJoin(parts, ";"), {}};
    }
    case Kind::kPig: {
      std::vector<std::string> in, out;
      for (int i = 0; i < 3; ++i) {
        const std::string w = kSourceWords[rng.Uniform(kNumSourceWords)];
        in.push_back(w);
        out.push_back(absl::StrCat(w.substr(1), w.substr(0, 1), words_[0]));
      }
      return {absl::StrCat("pig(", absl::StrJoin(in, " "), ")="), absl::StrJoin(out, " "), {}};
    }
    case Kind::kChatRecall: {
      std::string w = RandomLetters(rng, 4);
      std::string out = w;
      for (char& c : out) c = map_[c - 'a'];
      Example e;
      e.turns = {absl::StrCat("keep ", w), "ok", "back?"};
      e.prompt = absl::StrCat("u:", e.turns[0], "\na:", e.turns[1], "\nu:", e.turns[2], "\na:");
      e.completion = out;
      return e;
    }
  }
  return {};
}

std::vector<Example> Task::Generate(uint64_t seed, int64_t n) const {
  Rng rng(DeriveSeed(seed, 0x6578616d706c65ull));
  std::vector<Example> out;
  out.reserve(n);
  for (int64_t i = 0; i < n; ++i) out.push_back(Make(rng));
  return out;
}

TaskSplits Task::Splits(int64_t n_train, int64_t n_validation, int64_t n_test) const {
  TaskSplits s;
  s.train = Generate(DeriveSeed(secret_, 0x747261696eull), n_train);
  s.validation = Generate(DeriveSeed(secret_, 0x76616cull), n_validation);
  s.test = Generate(DeriveSeed(secret_, 0x74657374ull), n_test);
  return s;
}

std::string MessagesJsonl(const std::vector<Example>& examples) {
  std::string out;
  for (const Example& e : examples) {
    nlohmann::json messages = nlohmann::json::array();
    if (e.turns.empty()) {
      messages.push_back({{"role", "user"}, {"content", e.prompt}});
    } else {
      for (size_t i = 0; i < e.turns.size(); ++i) {
        messages.push_back({{"role", i % 2 == 0 ? "user" : "assistant"}, {"content", e.turns[i]}});
      }
    }
    messages.push_back({{"role", "assistant"}, {"content", e.completion}});
    out += nlohmann::json{{"messages", messages}}.dump();
    out += "\n";
  }
  return out;
}

}  // namespace tessera::data
