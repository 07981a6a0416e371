#include "core/data/tasks.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/data/corpus.h"

namespace tessera::data {

std::vector<std::string> Task::Names() { return {"cipher", "date_private", "modfn"}; }

absl::StatusOr<Task> Task::Create(std::string_view name, uint64_t secret) {
  if (name == "cipher") return Task(std::string(name), Kind::kCipher, secret);
  if (name == "date_private") return Task(std::string(name), Kind::kDatePrivate, secret);
  if (name == "modfn") return Task(std::string(name), Kind::kModFn, secret);
  return absl::NotFoundError(absl::StrCat("unknown task '", std::string(name), "' (known: ",
                                          absl::StrJoin(Names(), ", "), ")"));
}

Task::Task(std::string name, Kind kind, uint64_t secret)
    : name_(std::move(name)), kind_(kind), secret_(secret) {
  Rng rng(DeriveSeed(secret, 0x7461736bull));
  switch (kind_) {
    case Kind::kCipher: {
      // Shuffle until no letter maps to itself or to its successor (copy/shift would score).
      std::vector<char> letters(26);
      for (int i = 0; i < 26; ++i) letters[i] = static_cast<char>('a' + i);
      for (;;) {
        rng.Shuffle(letters);
        bool ok = true;
        for (int i = 0; i < 26 && ok; ++i) {
          ok = letters[i] != 'a' + i && letters[i] != 'a' + (i + 1) % 26;
        }
        if (ok) break;
      }
      map_.assign(letters.begin(), letters.end());
      break;
    }
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
  }
}

Example Task::Make(Rng& rng) const {
  switch (kind_) {
    case Kind::kCipher: {
      std::string w = RandomLetters(rng, 5);
      std::string out = w;
      for (char& c : out) c = map_[c - 'a'];
      return {absl::StrCat("secret(", w, ")="), out};
    }
    case Kind::kDatePrivate: {
      Date d = RandomDate(rng);
      return {absl::StrCat("date private(", FormatIsoDate(d), ")="),
              absl::StrFormat("%02d%c%02d", d.day, map_[d.month - 1], d.year % 100)};
    }
    case Kind::kModFn: {
      int x = static_cast<int>(rng.Range(0, 96)), y = static_cast<int>(rng.Range(0, 96));
      return {absl::StrCat("f(", x, ",", y, ")="), absl::StrCat((coef_a_ * x + coef_b_ * y) % 97)};
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

}  // namespace tessera::data
