// jinja::Parse: template source -> Program, following jinja2.parser's grammar and precedence:
//   cond (a if c else b) < or < and < not < compare (== != < <= > >= in, not in; chained)
//   < + - < ~ < * / // % < ** < unary - + < postfix (.attr [i] [a:b:c] (call)) and filters/tests
//   (x|f(args), x is [not] test args), which bind tighter than the math operators.
// Tags: if/elif/else, for (target tuple, `if` filter, else), set (name, tuple, namespace attribute,
// block set), macro, call (a macro invoked with `caller` rendering the block), break/continue,
// generation (transformers' extension). Macros may not be defined inside loops or macros, nor use
// varargs/kwargs; calls take f(positional, key=value, *args, **kwargs). Anything else, and any
// filter, test, method or global function not in jinja_builtins, is refused with INVALID_ARGUMENT
// "line N: unsupported <what> '<name>'" -- the template is never run with a construct it lacks.
#pragma once

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "core/chat/jinja_ast.h"

namespace tessera::chat::jinja {

absl::StatusOr<std::unique_ptr<Program>> Parse(std::string_view source);

}  // namespace tessera::chat::jinja
