// Regex: the regex engine of the tokenizer pipeline (PCRE2, UTF + UCP, JIT when available).
//
// `tokenizers` compiles Split/ByteLevel/Replace patterns with Oniguruma and the Whitespace pre-tokenizer
// and added-token checks with Rust's regex crate. The syntax of tokenizer patterns (\p{L}, \p{N},
// (?i:...), lookahead) means the same in PCRE2; what differs is rewritten before compiling:
//   \s -> \p{White_Space} (both other engines; PCRE2's \s lacks U+0085);
//   \w -> Alphabetic, Mark, Decimal_Number, Connector_Punctuation (+ Join_Control in the Rust syntax);
//   \p{L} \p{N} \p{M} \p{P} \p{S} \w \d (and negations) -> plus the code points the other engine's newer
//   Unicode data has in the class (unicode_tables.inc, measured against tokenizers).
// Other property names use PCRE2's Unicode 14 data. Onig-only syntax with another meaning in PCRE2 (\h,
// nested classes, &&) and negated extended classes inside [...] are refused at load. FindAll iterates like
// onig's find_iter: an empty match right after the previous match is skipped. Thread-safe: match data and
// JIT stack are per thread.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::hf {

enum class RegexSyntax { kOniguruma, kRustRegex };

class Regex {
 public:
  // `pattern` in the engine's syntax; `where` names the tokenizer.json node for errors.
  static absl::StatusOr<std::unique_ptr<Regex>> Create(std::string_view pattern, std::string_view where,
                                                       RegexSyntax syntax = RegexSyntax::kOniguruma);
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
absl::StatusOr<std::string> TranslatePattern(std::string_view pattern, std::string_view where, RegexSyntax syntax);

}  // namespace tessera::hf
