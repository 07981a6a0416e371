// Regex: the regex engine of the tokenizer pipeline (PCRE2, UTF + UCP, JIT when available).
//
// `tokenizers` compiles Split/ByteLevel patterns with Oniguruma and the helper patterns of its added
// vocabulary with Rust's regex crate. The Unicode-property syntax of the common tokenizer patterns
// (\p{L}, \p{N}, (?i:...), lookahead) means the same in PCRE2; the escapes whose classes differ are
// rewritten to the Unicode properties both other engines use: \s -> White_Space, \w -> Alphabetic, Mark,
// Decimal_Number, Connector_Punctuation, Join_Control. Onig-only syntax with another meaning in PCRE2
// (\h, nested classes, &&) is refused at load. FindAll iterates like onig's find_iter: an empty match
// right after the previous match is skipped. Thread-safe: match data and JIT stack are per thread.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::hf {

class Regex {
 public:
  // `pattern` in Oniguruma/Rust syntax; `where` names the tokenizer.json node for errors.
  static absl::StatusOr<std::unique_ptr<Regex>> Create(std::string_view pattern, std::string_view where);
  // A literal string (the "String" patterns of Split/Replace).
  static absl::StatusOr<std::unique_ptr<Regex>> Literal(std::string_view text, std::string_view where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Every match [start, end) in `text` (valid UTF-8), left to right, non-overlapping.
  void FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;
  // The first match at or after `from`; false if none.
  bool Find(std::string_view text, size_t from, size_t& start, size_t& end) const;

 private:
  explicit Regex(void* code) : code_(code) {}
  void* code_;  // pcre2_code_8*
};

// Rewrites the escapes listed above; INVALID_ARGUMENT for constructs with another meaning in PCRE2.
absl::StatusOr<std::string> TranslatePattern(std::string_view pattern, std::string_view where);

}  // namespace tessera::hf
