// Tenant tasks: prompt/completion pairs, exact-match checkable, that the general corpus (corpus.h)
// never teaches and that cannot be solved by copying the input.
//
// Each task is parameterized by a tenant `secret`, so two tenants with the same task name still need
// different weights (which is what the overlays are for):
//   cipher        "secret(hbkqa)=" -> the five letters through a secret derangement of a-z (no letter
//                 maps to itself or to its `shift` successor, so neither copy(), upper() nor shift()
//                 from the corpus solves any letter).
//   date_private  "date private(2023-04-05)=" -> "05k23": day, a secret letter for the month, 2-digit
//                 year (a format the corpus does not contain).
//   modfn         "f(17,25)=" -> (a*x + b*y) mod 97 with secret coefficients a, b in [2, 96].
// Inputs are drawn from the example seed; the mapping only from the secret.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/data/rng.h"

namespace tessera::data {

struct Example {
  std::string prompt;
  std::string completion;
};

class Task {
 public:
  // NOT_FOUND (listing the known names) for an unknown `name`.
  static absl::StatusOr<Task> Create(std::string_view name, uint64_t secret);
  static std::vector<std::string> Names();  // "cipher", "date_private", "modfn"

  const std::string& name() const { return name_; }
  uint64_t secret() const { return secret_; }

  // One example with inputs drawn from `rng`.
  Example Make(Rng& rng) const;
  // `n` examples from `seed` (deterministic).
  std::vector<Example> Generate(uint64_t seed, int64_t n) const;
  // Exact match: the model's completion equals the reference (no trimming: the completion ends at
  // EOS, so trailing text is a mistake).
  static bool IsCorrect(const Example& example, std::string_view model_completion) {
    return model_completion == example.completion;
  }

  // The cipher's letter mapping (only meaningful for "cipher"): mapping()[c - 'a'].
  const std::string& letter_map() const { return map_; }

 private:
  enum class Kind { kCipher, kDatePrivate, kModFn };
  Task(std::string name, Kind kind, uint64_t secret);

  std::string name_;
  Kind kind_;
  uint64_t secret_;
  std::string map_;   // cipher: 26 letters; date_private: 12 month letters
  int coef_a_ = 0, coef_b_ = 0;
};

}  // namespace tessera::data
