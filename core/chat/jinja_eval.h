// jinja::RenderProgram: runs a parsed chat template over the given variables.
//
// Semantics follow jinja2 in transformers' ImmutableSandboxedEnvironment:
//   - scopes: a `for` body is a new scope each iteration (a `set` inside it is gone afterwards, which is
//     why templates use namespace()); `if` is not a scope; a macro call is a new scope over the
//     template's top level;
//   - undefined names/attributes are Undefined: printed as "", falsy, iterable as empty, `is defined`
//     false; any other use (attribute of it, arithmetic) is an error naming it;
//   - `and`/`or` return an operand, `~` concatenates str() of both sides, `+ - * / // % **` follow
//     Python (str % args formats), comparisons chain;
//   - `loop.index/index0/revindex/revindex0/first/last/length/previtem/nextitem/depth/cycle()`,
//     `{% for x in xs if cond %}` filters before counting, `else` runs when nothing was iterated,
//     break/continue (loopcontrols);
//   - {% call %}: the macro gets `caller`, which renders the block in the call site's scope (a macro
//     that never mentions caller refuses one, one that does sees Undefined without a call block).
// Errors are INVALID_ARGUMENT "line N: <what>", except raise_exception(msg), which is reported as
// exactly msg (as transformers surfaces jinja2's TemplateError). Output over 64 MiB or macro recursion
// deeper than 64 is RESOURCE_EXHAUSTED.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/chat/jinja_ast.h"
#include "core/chat/jinja_builtins.h"

namespace tessera::chat::jinja {

absl::StatusOr<std::string> RenderProgram(const Program& program,
                                          const std::vector<std::pair<std::string, Value>>& variables,
                                          const BuiltinEnv& env);

}  // namespace tessera::chat::jinja
