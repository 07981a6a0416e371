// jinja::Value: the dynamically typed values of the chat-template interpreter, with Python semantics.
//
// Chat templates are Jinja2 run by transformers in an ImmutableSandboxedEnvironment, so every value a
// template sees is a Python object built from JSON (None, bool, int, float, str, list, dict) plus a few
// interpreter objects (jinja Undefined, namespace(), macros/builtins, the `loop` object). This file gives
// them the Python behaviour the output depends on:
//   - str():  None -> "None", True -> "True", floats as Python repr ("1.0", "1e-05"), lists/dicts as
//             Python repr with single-quoted strings, Undefined -> "".
//   - truthiness, == (1 == 1.0 == True), ordering, and json.dumps for the `tojson` filter
//             (ensure_ascii, indent, separators, sort_keys as in json.dumps).
// Strings hold UTF-8; Python's str counts code points, so length/index/slice helpers work on code points.
// Lists and dicts are shared immutably (the sandbox forbids mutation); a namespace is shared mutably,
// as Python's object identity makes `{% set ns.x = ... %}` visible through every reference.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tessera::chat::jinja {

struct Value;
struct Dict;
struct LoopState;
struct CallArgs;

enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace, kCallable, kLoop };

using List = std::vector<Value>;
using NativeFn = std::function<absl::StatusOr<Value>(CallArgs&)>;

struct Callable {
  std::string name;  // for error messages: "macro 'foo'", "method 'strip'"
  NativeFn fn;
};

struct Value {
  Kind kind = Kind::kUndefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;
  bool markup = false;  // a string made by |safe or |escape (jinja2's Markup): `+` escapes the other side
  // What Python object a kList stands for: list, tuple, a generator (select/map/... return one:
  // always truthy, no len, not subscriptable, not printable), a dict view (items()/keys()/values():
  // not subscriptable, not printable) or a range (not printable).
  enum class Flavor { kList, kTuple, kGenerator, kDictView, kRange };
  Flavor flavor = Flavor::kList;
  std::shared_ptr<const List> list;
  std::shared_ptr<Dict> dict;  // kDict (never mutated after creation) and kNamespace (mutated by set)
  std::shared_ptr<const Callable> fn;
  std::shared_ptr<const LoopState> loop;

  static Value Undefined() { return Value(); }
  static Value None() { Value v; v.kind = Kind::kNone; return v; }
  static Value Bool(bool x) { Value v; v.kind = Kind::kBool; v.b = x; return v; }
  static Value Int(int64_t x) { Value v; v.kind = Kind::kInt; v.i = x; return v; }
  static Value Float(double x) { Value v; v.kind = Kind::kFloat; v.f = x; return v; }
  static Value Str(std::string x) { Value v; v.kind = Kind::kString; v.s = std::move(x); return v; }
  static Value MakeList(List items, Flavor flavor = Flavor::kList);
  static Value MakeDict(std::shared_ptr<Dict> d);
  static Value MakeNamespace(std::shared_ptr<Dict> d);
  static Value MakeCallable(std::string name, NativeFn fn);

  bool is_undefined() const { return kind == Kind::kUndefined; }
  bool is_string() const { return kind == Kind::kString; }
  bool is_number() const { return kind == Kind::kInt || kind == Kind::kFloat || kind == Kind::kBool; }
  bool is_list() const { return kind == Kind::kList; }
  bool tuple() const { return kind == Kind::kList && flavor == Flavor::kTuple; }
  bool is_dict() const { return kind == Kind::kDict; }
  // Python numeric view (bool counts as int).
  double AsDouble() const { return kind == Kind::kFloat ? f : kind == Kind::kBool ? (b ? 1 : 0) : double(i); }
  int64_t AsInt() const { return kind == Kind::kBool ? (b ? 1 : 0) : i; }
};

// Insertion-ordered mapping, as Python's dict. Keys are Values (strings in practice).
struct Dict {
  std::vector<std::pair<Value, Value>> items;
  const Value* Find(const Value& key) const;
  const Value* Find(std::string_view key) const;
  void Set(Value key, Value value);  // replaces in place, or appends
};

// State of one `for` loop, read through the `loop` variable.
struct LoopState {
  std::shared_ptr<const List> items;
  int64_t index0 = 0;
  int64_t depth0 = 0;
};

// Arguments of a call: positional then keyword, as written.
struct CallArgs {
  std::vector<Value> args;
  std::vector<std::pair<std::string, Value>> kwargs;
  int line = 0;
};

// Python-like type name for messages ("str", "int", "list", "dict", "NoneType", "Undefined"...).
std::string TypeName(const Value& v);

bool Truthy(const Value& v);
bool Equal(const Value& a, const Value& b);
// a < b with Python's rules; INVALID_ARGUMENT for unorderable types.
absl::StatusOr<bool> Less(const Value& a, const Value& b);

// str(v) as Python prints it (Undefined -> ""). Namespaces, callables and loops are refused.
absl::StatusOr<std::string> ToStr(const Value& v);
// repr(v).
absl::StatusOr<std::string> Repr(const Value& v);
std::string PyRepr(std::string_view s);  // repr() of a str
std::string FloatRepr(double d);         // repr() of a float

// The most bytes a render builds in one string (its output, a concatenation, tojson's result, an
// indentation): past it, RESOURCE_EXHAUSTED instead of an allocation the size a template asks for.
inline constexpr size_t kMaxStringBytes = size_t{64} << 20;

// json.dumps(v, ensure_ascii, indent, separators, sort_keys). RESOURCE_EXHAUSTED when the result would
// pass kMaxStringBytes. `indent` < 0 means None; `indent_str`
// (when set) is a string indent. Separators default as json.dumps: (", ", ": ") without indent,
// (",", ": ") with one.
struct JsonDumpOptions {
  bool ensure_ascii = false;
  bool has_indent = false;
  std::string indent;
  bool has_separators = false;
  std::string item_sep, key_sep;
  bool sort_keys = false;
};
absl::StatusOr<std::string> JsonDumps(const Value& v, const JsonDumpOptions& opts);

// JSON -> Value. ordered_json keeps the key order Python's dict would have (it matters to tojson);
// plain json objects come out in nlohmann's sorted key order.
Value FromJson(const nlohmann::ordered_json& j);
Value FromJson(const nlohmann::json& j);

// UTF-8 <-> code points (invalid bytes become U+FFFD on decode).
std::u32string Utf8Decode(std::string_view s);
std::string Utf8Encode(std::u32string_view s);
void AppendUtf8(std::string& out, char32_t c);
int64_t CodePointLength(std::string_view s);
bool IsPySpace(char32_t c);  // str.isspace()

}  // namespace tessera::chat::jinja
