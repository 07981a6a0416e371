// Filters, tests, methods and globals of chat templates: jinja2 3.1 / Python semantics (see
// jinja_builtins.h for the list and the deliberate refusals).
#include "core/chat/jinja_builtins.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/util/status_macros.h"

namespace tessera::chat::jinja {
namespace {

absl::Status Err(const std::string& msg) { return absl::InvalidArgumentError(std::string(msg)); }

const std::set<std::string, std::less<>>& FilterNames() {
  static const auto* s = new std::set<std::string, std::less<>>{
      "abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float", "format",
      "indent", "int", "items", "join", "last", "length", "list", "lower", "map", "reject", "rejectattr",
      "replace", "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum", "title",
      "tojson", "trim", "unique", "upper"};
  return *s;
}

const std::set<std::string, std::less<>>& TestNames() {
  static const auto* s = new std::set<std::string, std::less<>>{
      "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number", "string",
      "mapping", "iterable", "sequence", "callable", "odd", "even", "divisibleby", "eq", "equalto", "ne",
      "lt", "lessthan", "le", "gt", "greaterthan", "ge", "in", "sameas", "lower", "upper"};
  return *s;
}

const std::set<std::string, std::less<>>& StrMethods() {
  static const auto* s = new std::set<std::string, std::less<>>{
      "strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith", "upper", "lower", "title",
      "capitalize", "replace", "format", "join", "count", "find", "rfind", "splitlines"};
  return *s;
}

const std::set<std::string, std::less<>>& DictMethods() {
  static const auto* s = new std::set<std::string, std::less<>>{"get", "items", "keys", "values"};
  return *s;
}

const std::set<std::string, std::less<>>& MutatingMethods() {
  static const auto* s = new std::set<std::string, std::less<>>{
      "append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear", "update", "setdefault",
      "popitem", "add", "discard"};
  return *s;
}

// ---- argument binding -----------------------------------------------------------------------------

// Binds positional and keyword arguments to `names` (Python signature order). Missing -> nullopt.
absl::StatusOr<std::vector<std::optional<Value>>> Bind(const CallArgs& a, std::vector<std::string_view> names,
                                                       const std::string& fname) {
  std::vector<std::optional<Value>> out(names.size());
  if (a.args.size() > names.size()) {
    return Err(absl::StrCat(fname, "() takes at most ", names.size(), " argument(s) (", a.args.size(), " given)"));
  }
  for (size_t k = 0; k < a.args.size(); ++k) out[k] = a.args[k];
  for (const auto& [key, v] : a.kwargs) {
    auto it = std::find(names.begin(), names.end(), key);
    if (it == names.end()) return Err(absl::StrCat(fname, "() got an unexpected keyword argument '", key, "'"));
    size_t idx = it - names.begin();
    if (out[idx]) return Err(absl::StrCat(fname, "() got multiple values for argument '", key, "'"));
    out[idx] = v;
  }
  return out;
}

absl::Status NoMarkup(const Value& v, const std::string& what) {
  if (v.is_string() && v.markup) {
    return Err(absl::StrCat(what, " on a |safe/|escape string is not supported"));
  }
  return absl::OkStatus();
}

// soft_str(v) for the string filters, refusing Markup (whose methods escape their arguments).
absl::StatusOr<std::string> PlainStr(const Value& v, const std::string& what) {
  RETURN_IF_ERROR(NoMarkup(v, what));
  return ToStr(v);
}

absl::StatusOr<int64_t> IntArg(const Value& v, const std::string& what) {
  if (v.kind == Kind::kInt || v.kind == Kind::kBool) return v.AsInt();
  return Err(absl::StrCat(what, " must be an integer, not ", TypeName(v)));
}

// ---- case mapping -----------------------------------------------------------------------------------

bool IsCaseless(char32_t c) {
  return (c >= 0x80 && c <= 0xBF && c != 0xAA && c != 0xB5 && c != 0xBA) || c == 0xD7 || c == 0xF7 ||
         (c >= 0x0300 && c <= 0x036F && c != 0x0345) ||
         (c >= 0x0590 && c <= 0x06FF) || (c >= 0x0900 && c <= 0x0DFF) || (c >= 0x0E00 && c <= 0x0E7F) ||
         (c >= 0x2000 && c <= 0x206F) || (c >= 0x20A0 && c <= 0x20CF) || (c >= 0x2190 && c <= 0x23FF) ||
         (c >= 0x2500 && c <= 0x27BF) || (c >= 0x2E80 && c <= 0x2FDF) || (c >= 0x3000 && c <= 0x9FFF) ||
         (c >= 0xAC00 && c <= 0xD7AF) || (c >= 0xF900 && c <= 0xFAFF) || (c >= 0xFE00 && c <= 0xFE4F) ||
         (c >= 0x1F000 && c <= 0x1FAFF) || (c >= 0x20000 && c <= 0x3FFFF);
}

bool IsUpperCp(char32_t c) { return (c >= 'A' && c <= 'Z') || (c >= 0xC0 && c <= 0xDE && c != 0xD7); }
bool IsLowerCp(char32_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 0xDF && c <= 0xFF && c != 0xF7) || c == 0xB5;
}
bool IsCased(char32_t c) { return IsUpperCp(c) || IsLowerCp(c); }

absl::Status CheckCaseable(char32_t c) {
  if (c < 0x80 || IsCased(c) || IsCaseless(c)) return absl::OkStatus();
  return Err(absl::StrFormat("case mapping of U+%04X is not supported (ASCII and Latin-1 only)",
                             static_cast<uint32_t>(c)));
}

void AppendLower(std::u32string& out, char32_t c) {
  out.push_back(IsUpperCp(c) ? c + 0x20 : c);
}
void AppendUpper(std::u32string& out, char32_t c, bool title) {
  if (c >= 'a' && c <= 'z') {
    out.push_back(c - 0x20);
  } else if (c == 0xDF) {
    out += title ? U"Ss" : U"SS";
  } else if (c == 0xFF) {
    out.push_back(0x178);
  } else if (c == 0xB5) {
    out.push_back(0x39C);
  } else if (c >= 0xE0 && c <= 0xFE && c != 0xF7) {
    out.push_back(c - 0x20);
  } else {
    out.push_back(c);
  }
}

enum class CaseOp { kLower, kUpper, kTitle, kCapitalize, kJinjaTitle };

absl::StatusOr<std::string> MapCase(std::string_view s, CaseOp op) {
  std::u32string in = Utf8Decode(s), out;
  for (char32_t c : in) RETURN_IF_ERROR(CheckCaseable(c));
  switch (op) {
    case CaseOp::kLower:
      for (char32_t c : in) AppendLower(out, c);
      break;
    case CaseOp::kUpper:
      for (char32_t c : in) AppendUpper(out, c, false);
      break;
    case CaseOp::kCapitalize:
      for (size_t k = 0; k < in.size(); ++k) {
        if (k == 0) {
          AppendUpper(out, in[k], true);
        } else {
          AppendLower(out, in[k]);
        }
      }
      break;
    case CaseOp::kTitle: {  // str.title(): first cased char of each run of cased chars upper
      bool prev_cased = false;
      for (char32_t c : in) {
        if (IsCased(c)) {
          if (prev_cased) {
            AppendLower(out, c);
          } else {
            AppendUpper(out, c, true);
          }
          prev_cased = true;
        } else {
          out.push_back(c);
          prev_cased = false;
        }
      }
      break;
    }
    case CaseOp::kJinjaTitle: {  // jinja2 title: split on ([-\s({\[<]+), item[0].upper() + item[1:].lower()
      bool at_start = true;
      for (char32_t c : in) {
        bool sep = c == '-' || IsPySpace(c) || c == '(' || c == '{' || c == '[' || c == '<';
        if (sep) {
          out.push_back(c);
          at_start = true;
        } else if (at_start) {
          AppendUpper(out, c, false);
          at_start = false;
        } else {
          AppendLower(out, c);
        }
      }
      break;
    }
  }
  return Utf8Encode(out);
}

// ---- str helpers --------------------------------------------------------------------------------------

std::string Strip(std::string_view s, const std::optional<Value>& chars, bool left, bool right) {
  std::u32string cps = Utf8Decode(s);
  std::u32string set;
  bool use_set = chars && chars->is_string();
  if (use_set) set = Utf8Decode(chars->s);
  auto strip_me = [&](char32_t c) { return use_set ? set.find(c) != std::u32string::npos : IsPySpace(c); };
  size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strip_me(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip_me(cps[e - 1])) --e;
  }
  return Utf8Encode(std::u32string_view(cps).substr(b, e - b));
}

std::vector<std::string> SplitWhitespace(std::string_view s, int64_t maxsplit) {
  std::u32string cps = Utf8Decode(s);
  std::vector<std::string> out;
  size_t k = 0;
  while (k < cps.size()) {
    while (k < cps.size() && IsPySpace(cps[k])) ++k;
    if (k >= cps.size()) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
      size_t e = cps.size();
      while (e > k && IsPySpace(cps[e - 1])) --e;
      out.push_back(Utf8Encode(std::u32string_view(cps).substr(k, e - k)));
      break;
    }
    size_t e = k;
    while (e < cps.size() && !IsPySpace(cps[e])) ++e;
    out.push_back(Utf8Encode(std::u32string_view(cps).substr(k, e - k)));
    k = e;
  }
  return out;
}

std::vector<std::string> SplitSep(std::string_view s, std::string_view sep, int64_t maxsplit) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
    size_t f = s.find(sep, pos);
    if (f == std::string_view::npos) break;
    out.emplace_back(s.substr(pos, f - pos));
    pos = f + sep.size();
  }
  out.emplace_back(s.substr(pos));
  return out;
}

std::vector<std::string> RSplitSep(std::string_view s, std::string_view sep, int64_t maxsplit) {
  std::vector<std::string> out;
  size_t end = s.size();
  while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
    if (end < sep.size()) break;
    size_t f = s.rfind(sep, end - sep.size());
    if (f == std::string_view::npos) break;
    out.emplace_back(s.substr(f + sep.size(), end - f - sep.size()));
    end = f;
  }
  out.emplace_back(s.substr(0, end));
  std::reverse(out.begin(), out.end());
  return out;
}

std::string Replace(std::string_view s, std::string_view old, std::string_view repl, int64_t count) {
  std::string out;
  if (old.empty()) {
    // Python inserts `repl` before every character and at the end.
    std::u32string cps = Utf8Decode(s);
    int64_t n = 0;
    for (char32_t c : cps) {
      if (count < 0 || n < count) {
        out += repl;
        ++n;
      }
      AppendUtf8(out, c);
    }
    if (count < 0 || n < count) out += repl;
    return out;
  }
  size_t pos = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    size_t f = s.find(old, pos);
    if (f == std::string_view::npos) break;
    out += s.substr(pos, f - pos);
    out += repl;
    pos = f + old.size();
    ++n;
  }
  out += s.substr(pos);
  return out;
}

// Python str.splitlines() (keepends=False).
std::vector<std::string> SplitLines(std::string_view s) {
  std::u32string cps = Utf8Decode(s);
  std::vector<std::string> out;
  size_t start = 0, k = 0;
  while (k < cps.size()) {
    char32_t c = cps[k];
    bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E ||
               c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!brk) {
      ++k;
      continue;
    }
    out.push_back(Utf8Encode(std::u32string_view(cps).substr(start, k - start)));
    k += (c == '\r' && k + 1 < cps.size() && cps[k + 1] == '\n') ? 2 : 1;
    start = k;
  }
  if (start < cps.size()) out.push_back(Utf8Encode(std::u32string_view(cps).substr(start)));
  return out;
}

Value StrList(const std::vector<std::string>& parts) {
  List l;
  for (const auto& p : parts) l.push_back(Value::Str(p));
  return Value::MakeList(std::move(l));
}

// Python's code-point index of byte offset `b` in s.
int64_t CpIndex(std::string_view s, size_t b) { return CodePointLength(s.substr(0, b)); }

// str.format with {}, {N}, {name} fields (no format specs or conversions).
absl::StatusOr<std::string> StrFormat(std::string_view fmt, const CallArgs& a) {
  std::string out;
  size_t auto_idx = 0;
  for (size_t k = 0; k < fmt.size(); ++k) {
    char c = fmt[k];
    if (c == '{' && k + 1 < fmt.size() && fmt[k + 1] == '{') {
      out.push_back('{');
      ++k;
      continue;
    }
    if (c == '}' && k + 1 < fmt.size() && fmt[k + 1] == '}') {
      out.push_back('}');
      ++k;
      continue;
    }
    if (c == '}') return Err("str.format: single '}' encountered in format string");
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    size_t e = fmt.find('}', k);
    if (e == std::string_view::npos) return Err("str.format: single '{' encountered in format string");
    std::string_view field = fmt.substr(k + 1, e - k - 1);
    if (field.find_first_of(":!.[") != std::string_view::npos) {
      return Err(absl::StrCat("str.format: unsupported field '{", std::string(field), "}' (format specs and conversions are not supported)"));
    }
    const Value* v = nullptr;
    if (field.empty() || std::all_of(field.begin(), field.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
      size_t idx = field.empty() ? auto_idx++ : std::stoul(std::string(field));
      if (idx >= a.args.size()) return Err("str.format: replacement index out of range");
      v = &a.args[idx];
    } else {
      for (const auto& kw : a.kwargs) {
        if (kw.first == field) v = &kw.second;
      }
      if (v == nullptr) return Err(absl::StrCat("str.format: missing argument '", std::string(field), "'"));
    }
    ASSIGN_OR_RETURN(std::string s, ToStr(*v));
    out += s;
    k = e;
  }
  return out;
}

absl::StatusOr<Value> CallStrMethod(const Value& self, const std::string& m, const CallArgs& a) {
  RETURN_IF_ERROR(NoMarkup(self, absl::StrCat("str.", m, "()")));
  const std::string& s = self.s;
  std::string fname = absl::StrCat("str.", m);
  if (m == "strip" || m == "lstrip" || m == "rstrip") {
    ASSIGN_OR_RETURN(auto b, Bind(a, {"chars"}, fname));
    if (b[0] && !b[0]->is_string() && b[0]->kind != Kind::kNone) return Err(fname + " arg must be None or str");
    return Value::Str(Strip(s, b[0], m != "rstrip", m != "lstrip"));
  }
  if (m == "split" || m == "rsplit") {
    ASSIGN_OR_RETURN(auto b, Bind(a, {"sep", "maxsplit"}, fname));
    int64_t maxsplit = -1;
    if (b[1]) {
      ASSIGN_OR_RETURN(maxsplit, IntArg(*b[1], "maxsplit"));
    }
    if (!b[0] || b[0]->kind == Kind::kNone) {
      if (m == "rsplit" && maxsplit >= 0) return Err("str.rsplit with maxsplit and no separator is not supported");
      return StrList(SplitWhitespace(s, maxsplit));
    }
    if (!b[0]->is_string()) return Err(fname + ": sep must be str or None");
    if (b[0]->s.empty()) return Err("empty separator");
    return StrList(m == "split" ? SplitSep(s, b[0]->s, maxsplit) : RSplitSep(s, b[0]->s, maxsplit));
  }
  if (m == "startswith" || m == "endswith") {
    ASSIGN_OR_RETURN(auto b, Bind(a, {"prefix"}, fname));
    if (!b[0]) return Err(fname + "() takes at least 1 argument");
    std::vector<std::string> cands;
    if (b[0]->is_string()) {
      cands.push_back(b[0]->s);
    } else if (b[0]->tuple()) {
      for (const Value& v : *b[0]->list) {
        if (!v.is_string()) return Err(fname + ": tuple items must be str");
        cands.push_back(v.s);
      }
    } else {
      return Err(absl::StrCat(fname, " first arg must be str or a tuple of str, not ", TypeName(*b[0])));
    }
    for (const auto& c : cands) {
      bool hit = m == "startswith" ? s.compare(0, c.size(), c) == 0 && s.size() >= c.size()
                                   : s.size() >= c.size() && s.compare(s.size() - c.size(), c.size(), c) == 0;
      if (hit) return Value::Bool(true);
    }
    return Value::Bool(false);
  }
  if (m == "upper" || m == "lower" || m == "title" || m == "capitalize") {
    RETURN_IF_ERROR(Bind(a, {}, fname).status());
    CaseOp op = m == "upper" ? CaseOp::kUpper : m == "lower" ? CaseOp::kLower : m == "title" ? CaseOp::kTitle : CaseOp::kCapitalize;
    ASSIGN_OR_RETURN(std::string r, MapCase(s, op));
    return Value::Str(std::move(r));
  }
  if (m == "replace") {
    ASSIGN_OR_RETURN(auto b, Bind(a, {"old", "new", "count"}, fname));
    if (!b[0] || !b[1] || !b[0]->is_string() || !b[1]->is_string()) return Err("str.replace needs two str arguments");
    int64_t count = -1;
    if (b[2]) {
      ASSIGN_OR_RETURN(count, IntArg(*b[2], "count"));
    }
    return Value::Str(Replace(s, b[0]->s, b[1]->s, count));
  }
  if (m == "format") {
    ASSIGN_OR_RETURN(std::string r, StrFormat(s, a));
    return Value::Str(std::move(r));
  }
  if (m == "join") {
    ASSIGN_OR_RETURN(auto b, Bind(a, {"iterable"}, fname));
    if (!b[0]) return Err("str.join() takes exactly one argument");
    ASSIGN_OR_RETURN(List items, Iterate(*b[0]));
    std::string out;
    for (size_t k = 0; k < items.size(); ++k) {
      if (!items[k].is_string()) return Err(absl::StrCat("sequence item ", k, ": expected str instance, ", TypeName(items[k]), " found"));
      if (k) out += s;
      out += items[k].s;
    }
    return Value::Str(std::move(out));
  }
  if (m == "count" || m == "find" || m == "rfind") {
    ASSIGN_OR_RETURN(auto b, Bind(a, {"sub"}, fname));
    if (!b[0] || !b[0]->is_string()) return Err(fname + "() needs a str argument");
    const std::string& sub = b[0]->s;
    if (m == "count") {
      if (sub.empty()) return Value::Int(CodePointLength(s) + 1);
      int64_t n = 0;
      for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
      return Value::Int(n);
    }
    size_t p = m == "find" ? s.find(sub) : s.rfind(sub);
    return Value::Int(p == std::string::npos ? -1 : CpIndex(s, p));
  }
  if (m == "splitlines") {
    RETURN_IF_ERROR(Bind(a, {}, fname).status());
    return StrList(SplitLines(s));
  }
  return Err(absl::StrCat("'str' object has no method '", m, "'"));
}

absl::StatusOr<Value> CallDictMethod(const Value& self, const std::string& m, const CallArgs& a) {
  std::string fname = absl::StrCat("dict.", m);
  if (m == "get") {
    ASSIGN_OR_RETURN(auto b, Bind(a, {"key", "default"}, fname));
    if (!b[0]) return Err("dict.get expected at least 1 argument");
    const Value* v = self.dict->Find(*b[0]);
    if (v) return *v;
    return b[1] ? *b[1] : Value::None();
  }
  RETURN_IF_ERROR(Bind(a, {}, fname).status());
  List out;
  for (const auto& [k, v] : self.dict->items) {
    if (m == "items") {
      out.push_back(Value::MakeList({k, v}, Value::Flavor::kTuple));
    } else {
      out.push_back(m == "keys" ? k : v);
    }
  }
  return Value::MakeList(std::move(out), Value::Flavor::kDictView);
}

absl::StatusOr<Value> LoopAttr(const LoopState& l, const std::string& name) {
  int64_t n = static_cast<int64_t>(l.items->size());
  if (name == "index") return Value::Int(l.index0 + 1);
  if (name == "index0") return Value::Int(l.index0);
  if (name == "revindex") return Value::Int(n - l.index0);
  if (name == "revindex0") return Value::Int(n - l.index0 - 1);
  if (name == "first") return Value::Bool(l.index0 == 0);
  if (name == "last") return Value::Bool(l.index0 == n - 1);
  if (name == "length") return Value::Int(n);
  if (name == "depth") return Value::Int(l.depth0 + 1);
  if (name == "depth0") return Value::Int(l.depth0);
  if (name == "previtem") {
    if (l.index0 == 0) {
      Value u;
      u.s = "there is no previous item";
      return u;
    }
    return (*l.items)[l.index0 - 1];
  }
  if (name == "nextitem") {
    if (l.index0 + 1 >= n) {
      Value u;
      u.s = "there is no next item";
      return u;
    }
    return (*l.items)[l.index0 + 1];
  }
  Value u;
  u.s = absl::StrCat("'LoopContext' object has no attribute '", name, "'");
  return u;
}

Value UndefinedWith(std::string hint) {
  Value u;
  u.s = std::move(hint);
  return u;
}

absl::Status UndefinedError(const Value& v) {
  return Err(v.s.empty() ? "value is undefined" : v.s);
}

// jinja2's make_attrgetter: "a.b.0" -> getitem chain.
absl::StatusOr<Value> AttrPath(const Value& item, std::string_view path) {
  Value cur = item;
  size_t pos = 0;
  while (true) {
    size_t dot = path.find('.', pos);
    std::string_view part = path.substr(pos, dot == std::string_view::npos ? std::string_view::npos : dot - pos);
    Value key;
    if (!part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      key = Value::Int(std::stoll(std::string(part)));
    } else {
      key = Value::Str(std::string(part));
    }
    if (cur.is_undefined()) return UndefinedError(cur);
    ASSIGN_OR_RETURN(cur, GetItem(cur, key));
    if (dot == std::string_view::npos) return cur;
    pos = dot + 1;
  }
}

absl::StatusOr<Value> LowerIfStr(const Value& v, bool case_sensitive) {
  if (case_sensitive || !v.is_string()) return v;
  ASSIGN_OR_RETURN(std::string l, MapCase(v.s, CaseOp::kLower));
  return Value::Str(std::move(l));
}

absl::Status SortValues(std::vector<std::pair<Value, Value>>& keyed, bool reverse) {
  absl::Status st;
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    if (!st.ok()) return false;
    absl::StatusOr<bool> lt = reverse ? Less(y.first, x.first) : Less(x.first, y.first);
    if (!lt.ok()) {
      st = lt.status();
      return false;
    }
    return *lt;
  });
  return st;
}

// python's int(str) / float(str) for the int and float filters.
std::optional<int64_t> ParsePyInt(std::string_view s, int base) {
  std::string t = Strip(s, std::nullopt, true, true);
  std::string digits;
  size_t k = 0;
  bool neg = false;
  if (k < t.size() && (t[k] == '+' || t[k] == '-')) neg = t[k++] == '-';
  for (; k < t.size(); ++k) {
    if (t[k] == '_' && !digits.empty() && k + 1 < t.size() && t[k + 1] != '_') continue;
    digits.push_back(t[k]);
  }
  if (digits.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(digits.c_str(), &end, base);
  if (*end != 0 || errno != 0 || digits[0] == '+' || digits[0] == '-' || digits[0] == ' ') return std::nullopt;
  return neg ? -v : v;
}

std::optional<double> ParsePyFloat(std::string_view s) {
  std::string t = Strip(s, std::nullopt, true, true);
  std::string c;
  for (size_t k = 0; k < t.size(); ++k) {
    if (t[k] == '_') continue;
    c.push_back(t[k]);
  }
  if (c.empty() || c.find_first_of("xXpP") != std::string::npos) return std::nullopt;
  char* end = nullptr;
  double v = std::strtod(c.c_str(), &end);
  if (*end != 0) return std::nullopt;
  return v;
}

absl::StatusOr<Value> PyRound(const Value& v, int64_t precision, const std::string& method) {
  if (!v.is_number()) return Err(absl::StrCat("round: expected a number, not ", TypeName(v)));
  if (method != "common" && method != "ceil" && method != "floor") {
    return Err("round: method must be common, ceil or floor");
  }
  if (method == "common") {
    if (v.kind != Kind::kFloat) {
      if (precision >= 0) return Value::Int(v.AsInt());
      double p = std::pow(10.0, -precision);
      return Value::Int(static_cast<int64_t>(std::nearbyint(v.AsInt() / p) * p));
    }
    if (precision == 0) return Value::Float(std::nearbyint(v.f));
    if (precision > 0 && precision < 300) {
      // printf rounds the exact binary value half-to-even, as Python's round() does.
      char buf[512];
      std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(precision), v.f);
      return Value::Float(std::strtod(buf, nullptr));
    }
    return Err("round: unsupported precision");
  }
  double p = std::pow(10.0, static_cast<double>(precision));
  double x = v.AsDouble() * p;
  return Value::Float((method == "ceil" ? std::ceil(x) : std::floor(x)) / p);
}

// A width in spaces that a template asks for (indent, tojson's indent): RESOURCE_EXHAUSTED past
// kMaxStringBytes, before the string of that many spaces is allocated.
absl::Status CheckWidth(int64_t w, const char* what) {
  if (w > static_cast<int64_t>(kMaxStringBytes)) {
    return absl::ResourceExhaustedError(absl::StrCat(what, " ", w, " is more than the ", kMaxStringBytes >> 20,
                                                     " MiB a template may build"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Value> Indent(const Value& v, const std::vector<std::optional<Value>>& b) {
  ASSIGN_OR_RETURN(std::string s, PlainStr(v, "indent"));
  std::string ind = "    ";
  if (b[0]) {
    if (b[0]->is_string()) {
      ind = b[0]->s;
    } else {
      ASSIGN_OR_RETURN(int64_t w, IntArg(*b[0], "indent width"));
      RETURN_IF_ERROR(CheckWidth(w, "indent width"));
      ind = std::string(std::max<int64_t>(w, 0), ' ');
    }
  }
  bool first = b[1] && Truthy(*b[1]);
  bool blank = b[2] && Truthy(*b[2]);
  s += "\n";
  std::vector<std::string> lines = SplitLines(s);
  if (static_cast<double>(s.size()) + static_cast<double>(lines.size() + 1) * static_cast<double>(ind.size()) >
      static_cast<double>(kMaxStringBytes)) {
    return absl::ResourceExhaustedError(absl::StrCat("indent: the result would pass ", kMaxStringBytes >> 20, " MiB"));
  }
  std::string rv;
  if (blank) {
    for (size_t k = 0; k < lines.size(); ++k) {
      if (k) rv += "\n" + ind;
      rv += lines[k];
    }
  } else {
    rv = lines.empty() ? "" : lines[0];
    if (lines.size() > 1) {
      rv += "\n";
      for (size_t k = 1; k < lines.size(); ++k) {
        if (k > 1) rv += "\n";
        rv += lines[k].empty() ? lines[k] : ind + lines[k];
      }
    }
  }
  if (first) rv = ind + rv;
  return Value::Str(std::move(rv));
}

absl::StatusOr<Value> ToJson(const Value& v, const CallArgs& a) {
  ASSIGN_OR_RETURN(auto b, Bind(a, {"ensure_ascii", "indent", "separators", "sort_keys"}, "tojson"));
  JsonDumpOptions o;
  o.ensure_ascii = b[0] && Truthy(*b[0]);
  if (b[1] && b[1]->kind != Kind::kNone) {
    o.has_indent = true;
    if (b[1]->is_string()) {
      o.indent = b[1]->s;
    } else {
      ASSIGN_OR_RETURN(int64_t n, IntArg(*b[1], "tojson indent"));
      RETURN_IF_ERROR(CheckWidth(n, "tojson indent"));
      o.indent = std::string(std::max<int64_t>(n, 0), ' ');
    }
  }
  if (b[2] && b[2]->kind != Kind::kNone) {
    if (!b[2]->is_list() || b[2]->list->size() != 2 || !(*b[2]->list)[0].is_string() || !(*b[2]->list)[1].is_string()) {
      return Err("tojson separators must be a pair of strings");
    }
    o.has_separators = true;
    o.item_sep = (*b[2]->list)[0].s;
    o.key_sep = (*b[2]->list)[1].s;
  }
  o.sort_keys = b[3] && Truthy(*b[3]);
  ASSIGN_OR_RETURN(std::string s, JsonDumps(v, o));
  return Value::Str(std::move(s));
}

// The test named by select/reject/selectattr/rejectattr's argument (or plain truthiness).
absl::StatusOr<bool> RunTest(const std::optional<std::string>& test, const Value& v, const CallArgs& targs) {
  if (!test) return Truthy(v);
  CallArgs copy = targs;
  return ApplyTest(*test, v, copy);
}

absl::StatusOr<Value> SelectReject(const std::string& name, const Value& seq, const CallArgs& a) {
  bool by_attr = name == "selectattr" || name == "rejectattr";
  bool select = name == "select" || name == "selectattr";
  size_t k = 0;
  std::string attr;
  if (by_attr) {
    if (a.args.empty() || !a.args[0].is_string()) return Err(absl::StrCat(name, " needs an attribute name"));
    attr = a.args[0].s;
    k = 1;
  }
  std::optional<std::string> test;
  CallArgs targs;
  if (a.args.size() > k) {
    test = a.args[k].s;
    targs.args.assign(a.args.begin() + k + 1, a.args.end());
  }
  targs.kwargs = a.kwargs;
  ASSIGN_OR_RETURN(List items, Iterate(seq));
  List out;
  for (const Value& item : items) {
    Value probe = item;
    if (by_attr) {
      ASSIGN_OR_RETURN(probe, AttrPath(item, attr));
    }
    ASSIGN_OR_RETURN(bool hit, RunTest(test, probe, targs));
    if (hit == select) out.push_back(item);
  }
  return Value::MakeList(std::move(out), Value::Flavor::kGenerator);
}

absl::StatusOr<Value> Map(const Value& seq, const CallArgs& a) {
  ASSIGN_OR_RETURN(List items, Iterate(seq));
  List out;
  const Value* attribute = nullptr;
  const Value* dflt = nullptr;
  for (const auto& kw : a.kwargs) {
    if (kw.first == "attribute") attribute = &kw.second;
    if (kw.first == "default") dflt = &kw.second;
  }
  if (attribute) {
    if (!attribute->is_string() && attribute->kind != Kind::kInt) return Err("map: attribute must be a string");
    ASSIGN_OR_RETURN(std::string path, ToStr(*attribute));
    for (const Value& item : items) {
      ASSIGN_OR_RETURN(Value v, AttrPath(item, path));
      if (v.is_undefined() && dflt) v = *dflt;
      out.push_back(std::move(v));
    }
  } else {
    if (a.args.empty() || !a.args[0].is_string()) return Err("map needs a filter name or attribute=");
    CallArgs fargs;
    fargs.args.assign(a.args.begin() + 1, a.args.end());
    fargs.kwargs = a.kwargs;
    for (const Value& item : items) {
      CallArgs copy = fargs;
      ASSIGN_OR_RETURN(Value v, ApplyFilter(a.args[0].s, item, copy));
      out.push_back(std::move(v));
    }
  }
  return Value::MakeList(std::move(out), Value::Flavor::kGenerator);
}

}  // namespace

bool IsSupportedFilter(const std::string& name) { return FilterNames().count(name) > 0; }
bool IsSupportedTest(const std::string& name) { return TestNames().count(name) > 0; }
bool IsSupportedMethod(const std::string& name) {
  return StrMethods().count(name) || DictMethods().count(name) || name == "cycle";
}
bool IsMutatingMethod(const std::string& name) { return MutatingMethods().count(name) > 0; }
bool IsSupportedGlobal(const std::string& name) {
  return name == "range" || name == "namespace" || name == "dict" || name == "raise_exception" ||
         name == "strftime_now";
}

std::string HtmlEscape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

bool BindMethod(const Value& obj, const std::string& name, Value* out) {
  std::string m(name);
  if (obj.is_string() && StrMethods().count(name)) {
    *out = Value::MakeCallable(absl::StrCat("str.", m), [obj, m](CallArgs& a) { return CallStrMethod(obj, m, a); });
    return true;
  }
  if (obj.is_dict() && DictMethods().count(name)) {
    *out = Value::MakeCallable(absl::StrCat("dict.", m), [obj, m](CallArgs& a) { return CallDictMethod(obj, m, a); });
    return true;
  }
  if (obj.kind == Kind::kLoop && name == "cycle") {
    *out = Value::MakeCallable("loop.cycle", [obj](CallArgs& a) -> absl::StatusOr<Value> {
      if (a.args.empty()) return Err("no items for cycling given");
      return a.args[obj.loop->index0 % a.args.size()];
    });
    return true;
  }
  return false;
}

absl::StatusOr<Value> GetAttr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) return UndefinedError(obj);
  Value method;
  if (obj.is_dict() && IsMutatingMethod(name)) {
    return Err(absl::StrCat("access to attribute '", name, "' of 'dict' object is unsafe"));
  }
  if (BindMethod(obj, name, &method)) return method;
  if (obj.is_dict() || obj.kind == Kind::kNamespace) {
    const Value* v = obj.dict->Find(name);
    if (v) return *v;
    return UndefinedWith(absl::StrCat("'", obj.is_dict() ? "dict object" : "Namespace", "' has no attribute '", name, "'"));
  }
  if (obj.kind == Kind::kLoop) return LoopAttr(*obj.loop, name);
  return UndefinedWith(absl::StrCat("'", TypeName(obj), " object' has no attribute '", name, "'"));
}

absl::StatusOr<Value> GetItem(const Value& obj, const Value& key) {
  if (obj.is_undefined()) return UndefinedError(obj);
  switch (obj.kind) {
    case Kind::kDict: {
      const Value* v = obj.dict->Find(key);
      if (v) return *v;
      if (key.is_string()) {
        Value method;
        if (BindMethod(obj, key.s, &method)) return method;
      }
      ASSIGN_OR_RETURN(std::string ks, Repr(key));
      return UndefinedWith(absl::StrCat("'dict object' has no attribute ", ks));
    }
    case Kind::kList: {
      if (obj.flavor == Value::Flavor::kGenerator || obj.flavor == Value::Flavor::kDictView ||
          !(key.kind == Kind::kInt || key.kind == Kind::kBool)) {
        return UndefinedWith(absl::StrCat("'", TypeName(obj), " object' has no item ", key.is_string() ? key.s : ""));
      }
      int64_t n = static_cast<int64_t>(obj.list->size());
      int64_t idx = key.AsInt();
      if (idx < 0) idx += n;
      if (idx < 0 || idx >= n) return UndefinedWith(absl::StrCat("list index out of range: ", key.AsInt()));
      return (*obj.list)[idx];
    }
    case Kind::kString: {
      if (!(key.kind == Kind::kInt || key.kind == Kind::kBool)) {
        if (key.is_string()) return GetAttr(obj, key.s);
        return UndefinedWith("string indices must be integers");
      }
      RETURN_IF_ERROR(NoMarkup(obj, "indexing"));
      std::u32string cps = Utf8Decode(obj.s);
      int64_t n = static_cast<int64_t>(cps.size());
      int64_t idx = key.AsInt();
      if (idx < 0) idx += n;
      if (idx < 0 || idx >= n) return UndefinedWith("string index out of range");
      return Value::Str(Utf8Encode(std::u32string_view(cps).substr(idx, 1)));
    }
    case Kind::kNamespace:
    case Kind::kLoop:
      if (key.is_string()) return GetAttr(obj, key.s);
      return UndefinedWith("no such item");
    default: return UndefinedWith(absl::StrCat("'", TypeName(obj), "' object is not subscriptable"));
  }
}

absl::StatusOr<int64_t> Length(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined: return 0;
    case Kind::kString: return CodePointLength(v.s);
    case Kind::kList:
      if (v.flavor == Value::Flavor::kGenerator) return Err("object of type 'generator' has no len()");
      return static_cast<int64_t>(v.list->size());
    case Kind::kDict: return static_cast<int64_t>(v.dict->items.size());
    default: return Err(absl::StrCat("object of type '", TypeName(v), "' has no len()"));
  }
}

absl::StatusOr<List> Iterate(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined: return List();
    case Kind::kList: return *v.list;
    case Kind::kDict: {
      List keys;
      for (const auto& kv : v.dict->items) keys.push_back(kv.first);
      return keys;
    }
    case Kind::kString: {
      RETURN_IF_ERROR(NoMarkup(v, "iteration"));
      List chars;
      for (char32_t c : Utf8Decode(v.s)) chars.push_back(Value::Str(Utf8Encode(std::u32string(1, c))));
      return chars;
    }
    default: return Err(absl::StrCat("'", TypeName(v), "' object is not iterable"));
  }
}

absl::StatusOr<Value> Slice(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  if (obj.is_undefined()) return UndefinedError(obj);
  bool is_str = obj.is_string();
  if (!is_str && !(obj.is_list() && (obj.flavor == Value::Flavor::kList || obj.flavor == Value::Flavor::kTuple ||
                                     obj.flavor == Value::Flavor::kRange))) {
    return UndefinedWith(absl::StrCat("'", TypeName(obj), "' object is not subscriptable"));
  }
  if (is_str) RETURN_IF_ERROR(NoMarkup(obj, "slicing"));
  auto as_opt = [](const Value& v, const char* what) -> absl::StatusOr<std::optional<int64_t>> {
    if (v.is_undefined() || v.kind == Kind::kNone) return std::optional<int64_t>();
    if (v.kind != Kind::kInt && v.kind != Kind::kBool) {
      return Err(absl::StrCat("slice ", what, " must be an integer or None"));
    }
    return std::optional<int64_t>(v.AsInt());
  };
  ASSIGN_OR_RETURN(auto o_start, as_opt(start, "start"));
  ASSIGN_OR_RETURN(auto o_stop, as_opt(stop, "stop"));
  ASSIGN_OR_RETURN(auto o_step, as_opt(step, "step"));
  int64_t st = o_step.value_or(1);
  if (st == 0) return Err("slice step cannot be zero");
  std::u32string cps;
  if (is_str) cps = Utf8Decode(obj.s);
  int64_t n = is_str ? static_cast<int64_t>(cps.size()) : static_cast<int64_t>(obj.list->size());
  // CPython's PySlice_AdjustIndices.
  auto adjust = [&](std::optional<int64_t> x, bool is_start) {
    int64_t lower = st < 0 ? -1 : 0, upper = st < 0 ? n - 1 : n;
    if (!x) return is_start ? (st < 0 ? upper : lower) : (st < 0 ? lower : upper);
    int64_t v = *x;
    if (v < 0) {
      v += n;
      if (v < lower) v = lower;
    } else if (v > upper) {
      v = upper;
    }
    return v;
  };
  int64_t b = adjust(o_start, true), e = adjust(o_stop, false);
  std::vector<int64_t> idx;
  if (st > 0) {
    for (int64_t k = b; k < e; k += st) idx.push_back(k);
  } else {
    for (int64_t k = b; k > e; k += st) idx.push_back(k);
  }
  if (is_str) {
    std::u32string out;
    for (int64_t k : idx) out.push_back(cps[k]);
    return Value::Str(Utf8Encode(out));
  }
  List out;
  for (int64_t k : idx) out.push_back((*obj.list)[k]);
  return Value::MakeList(std::move(out), obj.flavor == Value::Flavor::kTuple ? Value::Flavor::kTuple : Value::Flavor::kList);
}

absl::StatusOr<bool> Contains(const Value& container, const Value& item) {
  switch (container.kind) {
    case Kind::kUndefined: return false;
    case Kind::kString:
      if (!item.is_string()) {
        return Err(absl::StrCat("'in <string>' requires string as left operand, not ", TypeName(item)));
      }
      return container.s.find(item.s) != std::string::npos;
    case Kind::kList:
      for (const Value& v : *container.list) {
        if (Equal(v, item)) return true;
      }
      return false;
    case Kind::kDict: return container.dict->Find(item) != nullptr;
    default: return Err(absl::StrCat("argument of type '", TypeName(container), "' is not iterable"));
  }
}

absl::StatusOr<std::string> PercentFormat(std::string_view fmt, const Value& args) {
  List positional;
  const Value* mapping = nullptr;
  if (args.tuple()) {
    positional = *args.list;
  } else if (args.is_dict()) {
    mapping = &args;
    positional.push_back(args);
  } else {
    positional.push_back(args);
  }
  size_t next = 0;
  bool used_mapping = false;
  std::string out;
  for (size_t k = 0; k < fmt.size(); ++k) {
    if (fmt[k] != '%') {
      out.push_back(fmt[k]);
      continue;
    }
    if (++k >= fmt.size()) return Err("incomplete format");
    const Value* arg = nullptr;
    if (fmt[k] == '(') {
      size_t e = fmt.find(')', k);
      if (e == std::string_view::npos || !mapping) return Err("format requires a mapping");
      const Value* v = mapping->dict->Find(fmt.substr(k + 1, e - k - 1));
      if (!v) return Err(absl::StrCat("KeyError: '", std::string(fmt.substr(k + 1, e - k - 1)), "'"));
      arg = v;
      used_mapping = true;
      k = e + 1;
    }
    std::string flags;
    while (k < fmt.size() && std::string_view("-+ 0#").find(fmt[k]) != std::string_view::npos) flags.push_back(fmt[k++]);
    std::string width, prec;
    while (k < fmt.size() && fmt[k] >= '0' && fmt[k] <= '9') width.push_back(fmt[k++]);
    bool has_prec = false;
    if (k < fmt.size() && fmt[k] == '.') {
      has_prec = true;
      ++k;
      while (k < fmt.size() && fmt[k] >= '0' && fmt[k] <= '9') prec.push_back(fmt[k++]);
    }
    if (k >= fmt.size()) return Err("incomplete format");
    char conv = fmt[k];
    if (conv == '%') {
      out.push_back('%');
      continue;
    }
    if (!arg) {
      if (next >= positional.size()) return Err("not enough arguments for format string");
      arg = &positional[next++];
    }
    std::string body;
    std::string spec = "%" + flags + width + (has_prec ? "." + prec : "");
    switch (conv) {
      case 's':
      case 'r': {
        ASSIGN_OR_RETURN(body, conv == 's' ? ToStr(*arg) : Repr(*arg));
        if (has_prec) body = Utf8Encode(Utf8Decode(body).substr(0, std::stoul(prec.empty() ? "0" : prec)));
        int64_t w = width.empty() ? 0 : std::stoll(width);
        int64_t len = CodePointLength(body);
        if (len < w) {
          std::string pad(w - len, ' ');
          body = flags.find('-') != std::string::npos ? body + pad : pad + body;
        }
        break;
      }
      case 'd':
      case 'i':
      case 'x':
      case 'X':
      case 'o': {
        if (!arg->is_number()) return Err(absl::StrCat("%", std::string(1, conv), " format: a real number is required, not ", TypeName(*arg)));
        int64_t iv = arg->kind == Kind::kFloat ? static_cast<int64_t>(std::trunc(arg->f)) : arg->AsInt();
        std::string c(1, conv == 'i' ? 'd' : conv);
        char buf[128];
        std::snprintf(buf, sizeof(buf), (spec + "ll" + c).c_str(), static_cast<long long>(iv));
        body = buf;
        break;
      }
      case 'f':
      case 'F':
      case 'e':
      case 'E':
      case 'g':
      case 'G': {
        if (!arg->is_number()) return Err(absl::StrCat("%", std::string(1, conv), " format: a real number is required, not ", TypeName(*arg)));
        char buf[512];
        std::snprintf(buf, sizeof(buf), (spec + std::string(1, conv)).c_str(), arg->AsDouble());
        body = buf;
        break;
      }
      default: return Err(absl::StrCat("unsupported format character '", std::string(1, conv), "'"));
    }
    out += body;
  }
  if (!used_mapping && !mapping && next < positional.size()) {
    return Err("not all arguments converted during string formatting");
  }
  return out;
}

Value MakeGlobal(const std::string& name, const BuiltinEnv& env) {
  if (name == "raise_exception") {
    return Value::MakeCallable("raise_exception", [](CallArgs& a) -> absl::StatusOr<Value> {
      std::string msg;
      if (!a.args.empty()) {
        absl::StatusOr<std::string> s = ToStr(a.args[0]);
        msg = s.ok() ? *s : "";
      }
      // The template's own error: reported verbatim (transformers raises TemplateError(message)).
      return absl::InvalidArgumentError(msg);
    });
  }
  if (name == "strftime_now") {
    auto now = env.now;
    return Value::MakeCallable("strftime_now", [now](CallArgs& a) -> absl::StatusOr<Value> {
      if (a.args.size() != 1 || !a.args[0].is_string()) return Err("strftime_now(format) takes one str");
      std::tm tm = now();
      std::string buf(256 + a.args[0].s.size() * 16, '\0');
      size_t n = std::strftime(buf.data(), buf.size(), a.args[0].s.c_str(), &tm);
      if (n == 0 && !a.args[0].s.empty()) return Err("strftime_now: formatted date too long or empty");
      buf.resize(n);
      return Value::Str(std::move(buf));
    });
  }
  if (name == "range") {
    return Value::MakeCallable("range", [](CallArgs& a) -> absl::StatusOr<Value> {
      if (!a.kwargs.empty() || a.args.empty() || a.args.size() > 3) return Err("range expects 1 to 3 integers");
      std::vector<int64_t> v;
      for (const Value& x : a.args) {
        ASSIGN_OR_RETURN(int64_t i, IntArg(x, "range argument"));
        v.push_back(i);
      }
      int64_t start = v.size() == 1 ? 0 : v[0], stop = v.size() == 1 ? v[0] : v[1], step = v.size() == 3 ? v[2] : 1;
      if (step == 0) return Err("range() arg 3 must not be zero");
      List out;
      for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
        if (out.size() >= 100000) return Err("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
        out.push_back(Value::Int(k));
      }
      return Value::MakeList(std::move(out), Value::Flavor::kRange);
    });
  }
  if (name == "namespace" || name == "dict") {
    bool ns = name == "namespace";
    return Value::MakeCallable(std::string(name), [ns](CallArgs& a) -> absl::StatusOr<Value> {
      auto d = std::make_shared<Dict>();
      if (a.args.size() > 1) return Err(absl::StrCat(ns ? "namespace" : "dict", " expected at most 1 positional argument"));
      if (a.args.size() == 1) {
        if (!a.args[0].is_dict()) return Err(absl::StrCat(ns ? "namespace" : "dict", " positional argument must be a dict"));
        d->items = a.args[0].dict->items;
      }
      for (const auto& [k, v] : a.kwargs) {
        if (ns && !k.empty() && k[0] == '_') {
          return Err(absl::StrCat("Chat templates cannot store underscore-prefixed attributes on a namespace, but got '", k, "'. Please rename the attribute."));
        }
        d->Set(Value::Str(k), v);
      }
      return ns ? Value::MakeNamespace(std::move(d)) : Value::MakeDict(std::move(d));
    });
  }
  return Value::Undefined();
}

absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& v, CallArgs& a) {
  auto one_arg = [&]() -> absl::StatusOr<Value> {
    if (a.args.size() != 1 || !a.kwargs.empty()) return Err(absl::StrCat("test '", name, "' takes one argument"));
    return a.args[0];
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.kind == Kind::kNone;
  if (name == "boolean") return v.kind == Kind::kBool;
  if (name == "false") return v.kind == Kind::kBool && !v.b;
  if (name == "true") return v.kind == Kind::kBool && v.b;
  if (name == "integer") return v.kind == Kind::kInt;
  if (name == "float") return v.kind == Kind::kFloat;
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
  if (name == "sequence") {
    return v.is_string() || v.is_dict() ||
           (v.is_list() && v.flavor != Value::Flavor::kGenerator && v.flavor != Value::Flavor::kDictView);
  }
  if (name == "callable") return v.kind == Kind::kCallable || v.is_undefined();
  if (name == "odd" || name == "even") {
    ASSIGN_OR_RETURN(int64_t i, IntArg(v, absl::StrCat("test '", name, "' operand")));
    return (((i % 2) + 2) % 2 == 1) == (name == "odd");
  }
  if (name == "divisibleby") {
    ASSIGN_OR_RETURN(Value n, one_arg());
    ASSIGN_OR_RETURN(int64_t d, IntArg(n, "divisibleby argument"));
    ASSIGN_OR_RETURN(int64_t i, IntArg(v, "divisibleby operand"));
    if (d == 0) return Err("integer division or modulo by zero");
    return i % d == 0;
  }
  if (name == "eq" || name == "equalto" || name == "ne") {
    ASSIGN_OR_RETURN(Value o, one_arg());
    return Equal(v, o) == (name != "ne");
  }
  if (name == "lt" || name == "lessthan" || name == "gt" || name == "greaterthan" || name == "le" || name == "ge") {
    ASSIGN_OR_RETURN(Value o, one_arg());
    if (name == "lt" || name == "lessthan") return Less(v, o);
    if (name == "gt" || name == "greaterthan") return Less(o, v);
    ASSIGN_OR_RETURN(bool lt, name == "le" ? Less(o, v) : Less(v, o));
    return !lt;
  }
  if (name == "in") {
    ASSIGN_OR_RETURN(Value o, one_arg());
    return Contains(o, v);
  }
  if (name == "sameas") {
    ASSIGN_OR_RETURN(Value o, one_arg());
    bool simple = [](const Value& x) { return x.kind == Kind::kNone || x.kind == Kind::kBool; }(o);
    if (!simple) return Err("test 'sameas' is supported only against none, true or false");
    return v.kind == o.kind && (v.kind == Kind::kNone || v.b == o.b);
  }
  if (name == "lower" || name == "upper") {
    ASSIGN_OR_RETURN(std::string s, ToStr(v));
    bool any_cased = false, all_ok = true;
    for (char32_t c : Utf8Decode(s)) {
      RETURN_IF_ERROR(CheckCaseable(c));
      if (!IsCased(c)) continue;
      any_cased = true;
      if (name == "lower" ? IsUpperCp(c) : IsLowerCp(c)) all_ok = false;
    }
    return any_cased && all_ok;
  }
  return Err(absl::StrCat("unsupported test '", name, "'"));
}

absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& v, CallArgs& a) {
  std::string fname(name);
  if (name == "default" || name == "d") {
    ASSIGN_OR_RETURN(auto b, Bind(a, {"default_value", "boolean"}, fname));
    bool boolean = b[1] && Truthy(*b[1]);
    if (v.is_undefined() || (boolean && !Truthy(v))) return b[0] ? *b[0] : Value::Str("");
    return v;
  }
  if (name == "length" || name == "count") {
    RETURN_IF_ERROR(Bind(a, {}, fname).status());
    ASSIGN_OR_RETURN(int64_t n, Length(v));
    return Value::Int(n);
  }
  if (name == "tojson") return ToJson(v, a);
  if (name == "safe") {
    RETURN_IF_ERROR(Bind(a, {}, fname).status());
    ASSIGN_OR_RETURN(std::string s, ToStr(v));
    Value out = Value::Str(std::move(s));
    out.markup = true;
    return out;
  }
  if (name == "escape" || name == "e") {
    RETURN_IF_ERROR(Bind(a, {}, fname).status());
    if (v.is_string() && v.markup) return v;
    ASSIGN_OR_RETURN(std::string s, ToStr(v));
    Value out = Value::Str(HtmlEscape(s));
    out.markup = true;
    return out;
  }
  if (name == "string") {
    RETURN_IF_ERROR(Bind(a, {}, fname).status());
    if (v.is_string()) return v;
    ASSIGN_OR_RETURN(std::string s, ToStr(v));
    return Value::Str(std::move(s));
  }
  if (name == "trim") {
    ASSIGN_OR_RETURN(auto b, Bind(a, {"chars"}, fname));
    ASSIGN_OR_RETURN(std::string s, PlainStr(v, "trim"));
    return Value::Str(Strip(s, b[0], true, true));
  }
  if (name == "lower" || name == "upper" || name == "title" || name == "capitalize") {
    RETURN_IF_ERROR(Bind(a, {}, fname).status());
    ASSIGN_OR_RETURN(std::string s, PlainStr(v, fname));
    CaseOp op = name == "lower" ? CaseOp::kLower : name == "upper" ? CaseOp::kUpper : name == "title" ? CaseOp::kJinjaTitle : CaseOp::kCapitalize;
    ASSIGN_OR_RETURN(std::string r, MapCase(s, op));
    return Value::Str(std::move(r));
  }
  if (name == "replace") {
    ASSIGN_OR_RETURN(auto b, Bind(a, {"old", "new", "count"}, fname));
    if (!b[0] || !b[1]) return Err("replace needs old and new");
    ASSIGN_OR_RETURN(std::string s, PlainStr(v, "replace"));
    ASSIGN_OR_RETURN(std::string o, ToStr(*b[0]));
    ASSIGN_OR_RETURN(std::string n, ToStr(*b[1]));
    int64_t count = -1;
    if (b[2] && b[2]->kind != Kind::kNone) {
      ASSIGN_OR_RETURN(count, IntArg(*b[2], "count"));
    }
    return Value::Str(Replace(s, o, n, count));
  }
  if (name == "join") {
    ASSIGN_OR_RETURN(auto b, Bind(a, {"d", "attribute"}, fname));
    std::string sep;
    if (b[0]) {
      ASSIGN_OR_RETURN(sep, ToStr(*b[0]));
    }
    ASSIGN_OR_RETURN(List items, Iterate(v));
    std::string out;
    for (size_t k = 0; k < items.size(); ++k) {
      Value item = items[k];
      if (b[1] && b[1]->kind != Kind::kNone) {
        ASSIGN_OR_RETURN(std::string path, ToStr(*b[1]));
        ASSIGN_OR_RETURN(item, AttrPath(item, path));
      }
      ASSIGN_OR_RETURN(std::string s, ToStr(item));
      if (k) out += sep;
      out += s;
    }
    return Value::Str(std::move(out));
  }
  if (name == "first" || name == "last") {
    RETURN_IF_ERROR(Bind(a, {}, fname).status());
    if (name == "last" && v.is_list() && v.flavor == Value::Flavor::kGenerator) {
      return Err("'generator' object is not reversible");
    }
    ASSIGN_OR_RETURN(List items, Iterate(v));
    if (items.empty()) return UndefinedWith(name == "first" ? "No first item, sequence was empty." : "No last item, sequence was empty.");
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") {
    RETURN_IF_ERROR(Bind(a, {}, fname).status());
    ASSIGN_OR_RETURN(List items, Iterate(v));
    return Value::MakeList(std::move(items));
  }
  if (name == "items") {
    RETURN_IF_ERROR(Bind(a, {}, fname).status());
    if (v.is_undefined()) return Value::MakeList({}, Value::Flavor::kGenerator);
    if (!v.is_dict()) return Err("Can only get item pairs from a mapping.");
    List out;
    for (const auto& [k, val] : v.dict->items) out.push_back(Value::MakeList({k, val}, Value::Flavor::kTuple));
    return Value::MakeList(std::move(out), Value::Flavor::kGenerator);
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    return SelectReject(name, v, a);
  }
  if (name == "map") return Map(v, a);
  if (name == "int") {
    ASSIGN_OR_RETURN(auto b, Bind(a, {"default", "base"}, fname));
    Value dflt = b[0] ? *b[0] : Value::Int(0);
    int64_t base = 10;
    if (b[1]) {
      ASSIGN_OR_RETURN(base, IntArg(*b[1], "base"));
    }
    if (v.kind == Kind::kInt || v.kind == Kind::kBool) return Value::Int(v.AsInt());
    if (v.kind == Kind::kFloat) {
      if (std::isnan(v.f)) return dflt;
      if (std::isinf(v.f)) return Err("cannot convert float infinity to integer");
      return Value::Int(static_cast<int64_t>(std::trunc(v.f)));
    }
    if (v.is_string()) {
      if (auto i = ParsePyInt(v.s, static_cast<int>(base))) return Value::Int(*i);
      if (auto f = ParsePyFloat(v.s)) {
        if (std::isnan(*f)) return dflt;
        if (std::isinf(*f)) return Err("cannot convert float infinity to integer");
        return Value::Int(static_cast<int64_t>(std::trunc(*f)));
      }
    }
    return dflt;
  }
  if (name == "float") {
    ASSIGN_OR_RETURN(auto b, Bind(a, {"default"}, fname));
    if (v.is_number()) return Value::Float(v.AsDouble());
    if (v.is_string()) {
      if (auto f = ParsePyFloat(v.s)) return Value::Float(*f);
    }
    return b[0] ? *b[0] : Value::Float(0.0);
  }
  if (name == "abs") {
    RETURN_IF_ERROR(Bind(a, {}, fname).status());
    if (v.kind == Kind::kFloat) return Value::Float(std::fabs(v.f));
    if (v.is_number()) return Value::Int(std::llabs(v.AsInt()));
    return Err(absl::StrCat("bad operand type for abs(): '", TypeName(v), "'"));
  }
  if (name == "round") {
    ASSIGN_OR_RETURN(auto b, Bind(a, {"precision", "method"}, fname));
    int64_t precision = 0;
    if (b[0]) {
      ASSIGN_OR_RETURN(precision, IntArg(*b[0], "precision"));
    }
    std::string method = "common";
    if (b[1]) {
      ASSIGN_OR_RETURN(method, ToStr(*b[1]));
    }
    return PyRound(v, precision, method);
  }
  if (name == "indent") {
    ASSIGN_OR_RETURN(auto b, Bind(a, {"width", "first", "blank"}, fname));
    return Indent(v, b);
  }
  if (name == "format") {
    RETURN_IF_ERROR(NoMarkup(v, "format"));
    ASSIGN_OR_RETURN(std::string s, ToStr(v));
    Value args;
    if (!a.kwargs.empty()) {
      if (!a.args.empty()) return Err("can't handle positional and keyword arguments at the same time");
      auto d = std::make_shared<Dict>();
      for (const auto& [k, val] : a.kwargs) d->Set(Value::Str(k), val);
      args = Value::MakeDict(std::move(d));
    } else {
      args = Value::MakeList(a.args, Value::Flavor::kTuple);
    }
    ASSIGN_OR_RETURN(std::string r, PercentFormat(s, args));
    return Value::Str(std::move(r));
  }
  if (name == "reverse") {
    RETURN_IF_ERROR(Bind(a, {}, fname).status());
    if (v.is_string()) {
      RETURN_IF_ERROR(NoMarkup(v, "reverse"));
      std::u32string cps = Utf8Decode(v.s);
      std::reverse(cps.begin(), cps.end());
      return Value::Str(Utf8Encode(cps));
    }
    if (v.is_list() && v.flavor == Value::Flavor::kGenerator) {
      ASSIGN_OR_RETURN(List items, Iterate(v));
      std::reverse(items.begin(), items.end());
      return Value::MakeList(std::move(items));
    }
    ASSIGN_OR_RETURN(List items, Iterate(v));
    std::reverse(items.begin(), items.end());
    return Value::MakeList(std::move(items), Value::Flavor::kGenerator);
  }
  if (name == "sort" || name == "dictsort" || name == "unique") {
    std::vector<std::pair<Value, Value>> keyed;
    if (name == "dictsort") {
      ASSIGN_OR_RETURN(auto b, Bind(a, {"case_sensitive", "by", "reverse"}, fname));
      if (!v.is_dict()) return Err("dictsort: expected a mapping");
      bool cs = b[0] && Truthy(*b[0]);
      std::string by = "key";
      if (b[1]) {
        ASSIGN_OR_RETURN(by, ToStr(*b[1]));
      }
      if (by != "key" && by != "value") return Err("You can only sort by either \"key\" or \"value\"");
      for (const auto& [k, val] : v.dict->items) {
        ASSIGN_OR_RETURN(Value key, LowerIfStr(by == "key" ? k : val, cs));
        keyed.emplace_back(key, Value::MakeList({k, val}, Value::Flavor::kTuple));
      }
      RETURN_IF_ERROR(SortValues(keyed, b[2] && Truthy(*b[2])));
    } else {
      std::vector<std::string_view> names = name == "sort" ? std::vector<std::string_view>{"reverse", "case_sensitive", "attribute"}
                                                           : std::vector<std::string_view>{"case_sensitive", "attribute"};
      ASSIGN_OR_RETURN(auto b, Bind(a, names, fname));
      size_t o = name == "sort" ? 1 : 0;
      bool cs = b[o] && Truthy(*b[o]);
      std::optional<std::string> attr;
      if (b[o + 1] && b[o + 1]->kind != Kind::kNone) {
        ASSIGN_OR_RETURN(attr, ToStr(*b[o + 1]));
      }
      ASSIGN_OR_RETURN(List items, Iterate(v));
      for (const Value& item : items) {
        Value key = item;
        if (attr) {
          ASSIGN_OR_RETURN(key, AttrPath(item, *attr));
        }
        ASSIGN_OR_RETURN(key, LowerIfStr(key, cs));
        keyed.emplace_back(key, item);
      }
      if (name == "sort") {
        RETURN_IF_ERROR(SortValues(keyed, b[0] && Truthy(*b[0])));
      } else {
        std::vector<std::pair<Value, Value>> uniq;
        for (auto& kv : keyed) {
          bool seen = false;
          for (const auto& u : uniq) seen |= Equal(u.first, kv.first);
          if (!seen) uniq.push_back(kv);
        }
        keyed = std::move(uniq);
      }
    }
    List out;
    for (auto& kv : keyed) out.push_back(kv.second);
    return Value::MakeList(std::move(out), name == "unique" ? Value::Flavor::kGenerator : Value::Flavor::kList);
  }
  if (name == "sum") {
    ASSIGN_OR_RETURN(auto b, Bind(a, {"attribute", "start"}, fname));
    ASSIGN_OR_RETURN(List items, Iterate(v));
    Value total = b[1] ? *b[1] : Value::Int(0);
    for (const Value& item : items) {
      Value x = item;
      if (b[0] && b[0]->kind != Kind::kNone) {
        ASSIGN_OR_RETURN(std::string path, ToStr(*b[0]));
        ASSIGN_OR_RETURN(x, AttrPath(item, path));
      }
      if (!x.is_number() || !total.is_number()) return Err("sum: items must be numbers");
      total = (x.kind == Kind::kFloat || total.kind == Kind::kFloat) ? Value::Float(total.AsDouble() + x.AsDouble())
                                                                     : Value::Int(total.AsInt() + x.AsInt());
    }
    return total;
  }
  return Err(absl::StrCat("unsupported filter '", name, "'"));
}

}  // namespace tessera::chat::jinja
