// Tenant tasks: prompt/completion pairs, exact-match checkable, that the general corpus (corpus.h)
// never teaches and that cannot be solved by copying the input. They are the fine-tuning task suite
// (ops/bench/bench_finetune runs every one at the service's default hyperparameters).
//
// Each task is parameterized by a tenant `secret`, so two tenants with the same task name still need
// different weights (which is what the overlays are for). Inputs are drawn from the example seed; the
// mapping only from the secret. Kinds:
//   cipher        char transform  "secret(hbkqa)=" -> the five letters through a secret derangement of
//                                 a-z (no letter maps to itself or to its `shift` successor, so neither
//                                 copy(), upper() nor shift() from the corpus solves any letter).
//   date_private  format          "date private(2023-04-05)=" -> "05k23": day, a secret letter for the
//                                 month, 2-digit year (a format the corpus does not contain).
//   digitfn       arithmetic      "g(4827)=" -> each digit d through (a*d + b) mod 10, secret a in
//                                 {3, 7, 9}, b in [1, 9] (a digit-wise linear map: it generalizes to
//                                 unseen numbers from the digits' ten cases).
//   rotrev        char transform  "rr(hbkq)=" -> the four letters reversed, each rotated by a secret
//                                 k in [3, 22] (neither reverse() nor shift() of the corpus).
//   lexicon       word rewriting  "say(red fox sees)=" -> each word replaced by the tenant's secret word
//                                 for it (24 source words -> 24 secret 3..5-letter words).
//   facts         lookup          "code of item17=" -> the tenant's secret 3-letter code of item17 (48
//                                 items). Memorization: every split asks about the same 48 facts.
//   classify      classification  "label(kqzbt)=" -> one of "spam", "ham", "info", "urgent", chosen by
//                                 a secret map of the first letter.
//   record_json   format (JSON)   "rec(alice,34)=" -> {"<k1>":"alice","<k2>":34} with the tenant's
//                                 two secret 3-letter key names.
//   style         style           "tone(the old robot)=" -> words capitalized, joined by a secret
//                                 separator, ending with a secret 2-letter signature: "The~Old~Robot~qz".
//   chat_recall   multi-turn chat user: "keep wxyz" / assistant: "ok" / user: "back?" / assistant: the
//                                 word through the tenant's secret letter map (cipher's kind). As
//                                 prompt/completion the turns are rendered as "u:keep wxyz\na:ok\nu:back?\na:";
//                                 MessagesJsonl writes them in the OpenAI {"messages": [...]} form.
//   record_kv     format (k=v)    "row(carol,lima,34)=" -> "<k>=carol;<k>=34;<k>=lima": the three
//                                 fields under the tenant's secret 3-letter keys in a secret order.
//   pig           word rewriting  "pig(red fox sees)=" -> "edr<s> oxf<s> eess<s>": each word's first
//                                 letter moved to its end, then the tenant's secret 2-letter suffix.
// Retired (Create still makes it, Names() no longer lists it):
//   modfn         arithmetic      "f(17,25)=" -> (a*x + b*y) mod 97, secret a, b in [2, 96]. 1000
//                                 examples are 11% of the 9409 pairs and the map has no local structure:
//                                 the tiny model neither generalizes nor memorizes it with any setting
//                                 tried, full fine-tuning included (ops/bench/RESULTS.md); digitfn
//                                 replaces it.
// Splits (Splits): train, validation and test drawn from three fixed derived seeds (deterministic).
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
  // chat_recall only: the conversation before the final assistant turn (user, assistant, user, ...);
  // the final assistant turn is `completion`.
  std::vector<std::string> turns;
};

struct TaskSplits {
  std::vector<Example> train, validation, test;
};

class Task {
 public:
  // NOT_FOUND (listing the known names) for an unknown `name`.
  static absl::StatusOr<Task> Create(std::string_view name, uint64_t secret);
  static std::vector<std::string> Names();  // every task above, in that order
  // The tasks kept out of the experiments that derived the auto hyperparameter rule (auto_hparams.h).
  // record_json was held out from the first rule; its result then shaped the completion-length term,
  // so record_kv and pig were added as new held-out tasks.
  static std::vector<std::string> HeldOutNames();  // "style", "chat_recall", "record_kv", "pig"

  const std::string& name() const { return name_; }
  uint64_t secret() const { return secret_; }

  // One example with inputs drawn from `rng`.
  Example Make(Rng& rng) const;
  // `n` examples from `seed` (deterministic).
  std::vector<Example> Generate(uint64_t seed, int64_t n) const;
  // Train/validation/test from fixed derived seeds (independent of the sizes' order of calls).
  TaskSplits Splits(int64_t n_train, int64_t n_validation, int64_t n_test) const;
  // Exact match: the model's completion equals the reference (no trimming: the completion ends at
  // EOS, so trailing text is a mistake).
  static bool IsCorrect(const Example& example, std::string_view model_completion) {
    return model_completion == example.completion;
  }

  // The cipher's letter mapping (cipher and chat_recall): mapping()[c - 'a'].
  const std::string& letter_map() const { return map_; }

 private:
  enum class Kind {
    kCipher, kDatePrivate, kModFn, kRotRev, kLexicon, kFacts, kClassify, kRecordJson, kStyle,
    kChatRecall, kDigitFn, kRecordKv, kPig
  };
  Task(std::string name, Kind kind, uint64_t secret);

  std::string name_;
  Kind kind_;
  uint64_t secret_;
  std::string map_;   // cipher/chat_recall: 26 letters; date_private: 12 month letters;
                      // classify: 26 label indices ('0'..'3'); style: separator + signature
  int coef_a_ = 0, coef_b_ = 0;       // modfn, digitfn; rotrev: coef_a_ = k
  std::vector<std::string> words_;    // lexicon: secret words; facts: codes; record_json, record_kv:
                                      // keys; pig: the suffix
  std::vector<int> order_;            // record_kv: the fields' output order
};

// {"messages": [{"role": "user", ...}, {"role": "assistant", ...}, ...]} per line; examples without
// turns become one user/assistant exchange (prompt, completion).
std::string MessagesJsonl(const std::vector<Example>& examples);

}  // namespace tessera::data
