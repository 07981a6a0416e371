// jinja::Lex: template source -> tokens, with the whitespace rules of transformers' chat environment.
//
// transformers renders chat templates with jinja2's defaults plus trim_blocks=True and
// lstrip_blocks=True, so this lexer reproduces jinja2.lexer for that configuration:
//   - newlines (\r\n, \r, \n) become "\n" and one trailing newline of the source is dropped
//     (keep_trailing_newline=False);
//   - `{%-`/`{{-`/`{#-` strip all whitespace before the tag; `-%}`/`-}}`/`-#}` all whitespace after it;
//   - lstrip_blocks: spaces/tabs between the start of a line and `{%` or `{#` are removed (not for `{{`,
//     nor with `{%+`);
//   - trim_blocks: the first newline after `%}` or `#}` is removed (not with `+%}`);
//   - `%}`/`}}` close a tag only when brackets inside it are balanced;
//   - string literals are decoded as Python's unicode-escape (\n, \t, \xHH, \uHHHH, ...).
// Errors are INVALID_ARGUMENT "line N: ...".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::chat::jinja {

enum class Tok { kData, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEof };

struct Token {
  Tok type = Tok::kEof;
  std::string text;  // data, name, decoded string, or operator
  int64_t ival = 0;
  double fval = 0;
  int line = 1;
};

absl::StatusOr<std::vector<Token>> Lex(std::string_view source);

}  // namespace tessera::chat::jinja
