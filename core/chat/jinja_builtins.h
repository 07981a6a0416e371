// The filters, tests, methods and global functions chat templates may use, with jinja2/Python
// semantics (jinja2 3.1 filters and tests; transformers' tojson override, raise_exception,
// strftime_now; Python str/dict methods). The parser refuses any name not listed here, so a template
// that needs something missing fails at Create with the name, instead of rendering differently.
//
// Deliberate refusals: mutating methods (list.append, dict.update, ...: the sandbox forbids them),
// Unicode case mapping beyond ASCII in lower/upper/title/capitalize (an error at render time, naming
// the character, rather than a guess), and operations on |safe/|escape strings other than printing,
// `~`, `+`, comparison and length.
#pragma once

#include <ctime>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "core/chat/jinja_value.h"

namespace tessera::chat::jinja {

bool IsSupportedFilter(const std::string& name);
bool IsSupportedTest(const std::string& name);
// Methods callable as `x.name(...)` on str, dict or the loop object.
bool IsSupportedMethod(const std::string& name);
// Methods that mutate (list.append, dict.update, ...); ImmutableSandboxedEnvironment refuses them.
bool IsMutatingMethod(const std::string& name);
// range, namespace, dict, raise_exception, strftime_now.
bool IsSupportedGlobal(const std::string& name);

// Services the builtins need from the renderer.
struct BuiltinEnv {
  std::function<std::tm()> now;  // local time for strftime_now
};

// Calls a filter/test by name (the parser has checked the name); errors carry no line (the caller adds it).
absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& operand, CallArgs& args);
absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& operand, CallArgs& args);
// obj.name as a bound method of str/dict/loop: sets *out and returns true, or returns false.
bool BindMethod(const Value& obj, const std::string& name, Value* out);
// The global functions, by name.
Value MakeGlobal(const std::string& name, const BuiltinEnv& env);

// Helpers shared with the evaluator.
absl::StatusOr<Value> GetItem(const Value& obj, const Value& key);      // obj[key], jinja2 rules
absl::StatusOr<Value> GetAttr(const Value& obj, const std::string& name);  // obj.name, jinja2 rules
absl::StatusOr<int64_t> Length(const Value& v);
// Iteration as Python's iter(): list/tuple items, dict keys, string characters, Undefined -> empty.
absl::StatusOr<List> Iterate(const Value& v);
absl::StatusOr<Value> Slice(const Value& obj, const Value& start, const Value& stop, const Value& step);
absl::StatusOr<bool> Contains(const Value& container, const Value& item);
// Python's `%` string formatting (str % args).
absl::StatusOr<std::string> PercentFormat(std::string_view fmt, const Value& args);
std::string HtmlEscape(std::string_view s);

}  // namespace tessera::chat::jinja
