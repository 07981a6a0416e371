// Python semantics of jinja::Value: see jinja_value.h.
#include "core/chat/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/util/status_macros.h"

namespace tessera::chat::jinja {

Value Value::MakeList(List items, Flavor flavor) {
  Value v;
  v.kind = Kind::kList;
  v.list = std::make_shared<const List>(std::move(items));
  v.flavor = flavor;
  return v;
}

Value Value::MakeDict(std::shared_ptr<Dict> d) {
  Value v;
  v.kind = Kind::kDict;
  v.dict = std::move(d);
  return v;
}

Value Value::MakeNamespace(std::shared_ptr<Dict> d) {
  Value v;
  v.kind = Kind::kNamespace;
  v.dict = std::move(d);
  return v;
}

Value Value::MakeCallable(std::string name, NativeFn fn) {
  Value v;
  v.kind = Kind::kCallable;
  v.fn = std::make_shared<const Callable>(Callable{std::move(name), std::move(fn)});
  return v;
}

const Value* Dict::Find(const Value& key) const {
  for (const auto& [k, v] : items) {
    if (Equal(k, key)) return &v;
  }
  return nullptr;
}

const Value* Dict::Find(std::string_view key) const {
  for (const auto& [k, v] : items) {
    if (k.kind == Kind::kString && k.s == key) return &v;
  }
  return nullptr;
}

void Dict::Set(Value key, Value value) {
  for (auto& [k, v] : items) {
    if (Equal(k, key)) {
      v = std::move(value);
      return;
    }
  }
  items.emplace_back(std::move(key), std::move(value));
}

std::string TypeName(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined: return "Undefined";
    case Kind::kNone: return "NoneType";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return v.markup ? "Markup" : "str";
    case Kind::kList:
      switch (v.flavor) {
        case Value::Flavor::kTuple: return "tuple";
        case Value::Flavor::kGenerator: return "generator";
        case Value::Flavor::kDictView: return "dict view";
        case Value::Flavor::kRange: return "range";
        default: return "list";
      }
    case Kind::kDict: return "dict";
    case Kind::kNamespace: return "Namespace";
    case Kind::kCallable: return "function";
    case Kind::kLoop: return "LoopContext";
  }
  return "?";
}

bool Truthy(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined:
    case Kind::kNone: return false;
    case Kind::kBool: return v.b;
    case Kind::kInt: return v.i != 0;
    case Kind::kFloat: return v.f != 0;
    case Kind::kString: return !v.s.empty();
    case Kind::kList: return v.flavor == Value::Flavor::kGenerator || !v.list->empty();
    case Kind::kDict: return !v.dict->items.empty();
    default: return true;
  }
}

bool Equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind != Kind::kFloat && b.kind != Kind::kFloat) return a.AsInt() == b.AsInt();
    return a.AsDouble() == b.AsDouble();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::kUndefined:
    case Kind::kNone: return true;
    case Kind::kString: return a.s == b.s;
    case Kind::kList: {
      if (a.tuple() != b.tuple() || a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k) {
        if (!Equal((*a.list)[k], (*b.list)[k])) return false;
      }
      return true;
    }
    case Kind::kDict: {
      if (a.dict->items.size() != b.dict->items.size()) return false;
      for (const auto& [k, v] : a.dict->items) {
        const Value* other = b.dict->Find(k);
        if (other == nullptr || !Equal(v, *other)) return false;
      }
      return true;
    }
    case Kind::kNamespace: return a.dict == b.dict;
    case Kind::kCallable: return a.fn == b.fn;
    case Kind::kLoop: return a.loop == b.loop;
    default: return false;
  }
}

absl::StatusOr<bool> Less(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind != Kind::kFloat && b.kind != Kind::kFloat) return a.AsInt() < b.AsInt();
    return a.AsDouble() < b.AsDouble();
  }
  // UTF-8 byte order equals code point order, which is how Python orders str.
  if (a.is_string() && b.is_string()) return a.s < b.s;
  if (a.is_list() && b.is_list() && a.tuple() == b.tuple()) {
    size_t n = std::min(a.list->size(), b.list->size());
    for (size_t k = 0; k < n; ++k) {
      const Value& x = (*a.list)[k];
      const Value& y = (*b.list)[k];
      if (!Equal(x, y)) return Less(x, y);
    }
    return a.list->size() < b.list->size();
  }
  return absl::InvalidArgumentError(absl::StrCat("'<' not supported between instances of '", TypeName(a),
                                                 "' and '", TypeName(b), "'"));
}

std::string FloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  // Shortest round-trip digits, then Python's layout (repr switches to exponent form when the decimal
  // point position is <= -4 or > 16).
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  size_t e = sci.find('e');
  std::string mant = sci.substr(0, e);
  int exp10 = std::stoi(sci.substr(e + 1));
  std::string digits;
  for (char c : mant) {
    if (c != '.') digits.push_back(c);
  }
  int decpt = exp10 + 1;
  std::string out = neg ? "-" : "";
  if (decpt <= -4 || decpt > 16) {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    out += absl::StrFormat("e%c%02d", exp10 < 0 ? '-' : '+', std::abs(exp10));
  } else if (decpt <= 0) {
    out += "0." + std::string(-decpt, '0') + digits;
  } else if (decpt >= static_cast<int>(digits.size())) {
    out += digits + std::string(decpt - digits.size(), '0') + ".0";
  } else {
    out += digits.substr(0, decpt) + "." + digits.substr(decpt);
  }
  return out;
}

void AppendUtf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::u32string Utf8Decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  size_t k = 0;
  while (k < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[k]);
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || k + n > s.size()) {
      out.push_back(0xFFFD);
      ++k;
      continue;
    }
    char32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    bool ok = true;
    for (int j = 1; j < n; ++j) {
      unsigned char cc = static_cast<unsigned char>(s[k + j]);
      if ((cc >> 6) != 2) ok = false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (!ok) {
      out.push_back(0xFFFD);
      ++k;
      continue;
    }
    out.push_back(cp);
    k += n;
  }
  return out;
}

std::string Utf8Encode(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) AppendUtf8(out, c);
  return out;
}

int64_t CodePointLength(std::string_view s) {
  int64_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

bool IsPySpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

namespace {

// Python's str.isprintable() for the code points a chat can plausibly hold (controls, separators,
// format characters, private use and surrogates are not printable).
bool IsPrintable(char32_t c) {
  if (c < 0x20 || (c >= 0x7F && c <= 0xA0) || c == 0xAD) return false;
  if ((c >= 0x2000 && c <= 0x200F) || (c >= 0x2028 && c <= 0x202F) || (c >= 0x205F && c <= 0x206F)) return false;
  if (c == 0x1680 || c == 0x3000 || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFB)) return false;
  if ((c >= 0xD800 && c <= 0xF8FF) || c >= 0xF0000) return false;
  return true;
}

}  // namespace

std::string PyRepr(std::string_view s) {
  bool has_single = s.find('\'') != std::string_view::npos;
  bool has_double = s.find('"') != std::string_view::npos;
  char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t c : Utf8Decode(s)) {
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (IsPrintable(c)) {
      AppendUtf8(out, c);
    } else if (c <= 0xFF) {
      out += absl::StrFormat("\\x%02x", static_cast<uint32_t>(c));
    } else if (c <= 0xFFFF) {
      out += absl::StrFormat("\\u%04x", static_cast<uint32_t>(c));
    } else {
      out += absl::StrFormat("\\U%08x", static_cast<uint32_t>(c));
    }
  }
  out.push_back(quote);
  return out;
}

absl::StatusOr<std::string> Repr(const Value& v) {
  switch (v.kind) {
    case Kind::kString: return v.markup ? "Markup(" + PyRepr(v.s) + ")" : PyRepr(v.s);
    case Kind::kList: {
      if (v.flavor != Value::Flavor::kList && v.flavor != Value::Flavor::kTuple) {
        return absl::InvalidArgumentError(absl::StrCat("printing a ", TypeName(v), " object is not supported"));
      }
      std::string out = v.tuple() ? "(" : "[";
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += ", ";
        ASSIGN_OR_RETURN(std::string item, Repr((*v.list)[k]));
        out += item;
      }
      if (v.tuple() && v.list->size() == 1) out += ",";
      out += v.tuple() ? ")" : "]";
      return out;
    }
    case Kind::kDict: {
      std::string out = "{";
      bool first = true;
      for (const auto& [k, val] : v.dict->items) {
        if (!first) out += ", ";
        first = false;
        ASSIGN_OR_RETURN(std::string ks, Repr(k));
        ASSIGN_OR_RETURN(std::string vs, Repr(val));
        out += ks + ": " + vs;
      }
      return out + "}";
    }
    case Kind::kUndefined: return std::string("Undefined");
    default: return ToStr(v);
  }
}

absl::StatusOr<std::string> ToStr(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined: return std::string();
    case Kind::kNone: return std::string("None");
    case Kind::kBool: return std::string(v.b ? "True" : "False");
    case Kind::kInt: return std::to_string(v.i);
    case Kind::kFloat: return FloatRepr(v.f);
    case Kind::kString: return v.s;
    case Kind::kList:
    case Kind::kDict: return Repr(v);
    case Kind::kNamespace: {
      Value d = Value::MakeDict(v.dict);
      ASSIGN_OR_RETURN(std::string inner, Repr(d));
      return "<Namespace " + inner + ">";
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("cannot convert a ", TypeName(v), " to a string"));
  }
}

namespace {

void JsonString(std::string& out, std::string_view s, bool ensure_ascii) {
  out.push_back('"');
  for (char32_t c : Utf8Decode(s)) {
    switch (c) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    if (c < 0x20 || (ensure_ascii && c > 0x7E)) {
      if (c > 0xFFFF) {
        char32_t v = c - 0x10000;
        out += absl::StrFormat("\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
      } else {
        out += absl::StrFormat("\\u%04x", static_cast<uint32_t>(c));
      }
    } else {
      AppendUtf8(out, c);
    }
  }
  out.push_back('"');
}

std::string JsonFloat(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  return FloatRepr(d);
}

absl::StatusOr<std::string> JsonKey(const Value& k) {
  switch (k.kind) {
    case Kind::kString: return k.s;
    case Kind::kInt: return std::to_string(k.i);
    case Kind::kFloat: return JsonFloat(k.f);
    case Kind::kBool: return std::string(k.b ? "true" : "false");
    case Kind::kNone: return std::string("null");
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("tojson: keys must be str, int, float, bool or None, not ", TypeName(k)));
  }
}

// RESOURCE_EXHAUSTED when `out` would grow past kMaxStringBytes by `more` bytes (checked before each
// separator and indentation, which a template sizes: tojson(indent=10**9) must not allocate a gigabyte).
absl::Status Room(const std::string& out, double more) {
  if (static_cast<double>(out.size()) + more > static_cast<double>(kMaxStringBytes)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("tojson: the result would pass ", kMaxStringBytes >> 20, " MiB (indent or separators too large)"));
  }
  return absl::OkStatus();
}

absl::Status Dump(std::string& out, const Value& v, const JsonDumpOptions& o, int level) {
  RETURN_IF_ERROR(Room(out, 0));
  std::string item_sep = o.has_separators ? o.item_sep : (o.has_indent ? "," : ", ");
  std::string key_sep = o.has_separators ? o.key_sep : ": ";
  auto newline = [&](int lvl) -> absl::Status {
    if (!o.has_indent) return absl::OkStatus();
    RETURN_IF_ERROR(Room(out, 1.0 + static_cast<double>(lvl) * static_cast<double>(o.indent.size())));
    out.push_back('\n');
    for (int k = 0; k < lvl; ++k) out += o.indent;
    return absl::OkStatus();
  };
  auto separator = [&](const std::string& sep) -> absl::Status {
    RETURN_IF_ERROR(Room(out, static_cast<double>(sep.size())));
    out += sep;
    return absl::OkStatus();
  };
  switch (v.kind) {
    case Kind::kNone: out += "null"; return absl::OkStatus();
    case Kind::kBool: out += v.b ? "true" : "false"; return absl::OkStatus();
    case Kind::kInt: out += std::to_string(v.i); return absl::OkStatus();
    case Kind::kFloat: out += JsonFloat(v.f); return absl::OkStatus();
    case Kind::kString: JsonString(out, v.s, o.ensure_ascii); return absl::OkStatus();
    case Kind::kList: {
      if (v.flavor != Value::Flavor::kList && v.flavor != Value::Flavor::kTuple) {
        return absl::InvalidArgumentError(
            absl::StrCat("tojson: Object of type ", TypeName(v), " is not JSON serializable"));
      }
      if (v.list->empty()) {
        out += "[]";
        return absl::OkStatus();
      }
      out.push_back('[');
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) RETURN_IF_ERROR(separator(item_sep));
        RETURN_IF_ERROR(newline(level + 1));
        RETURN_IF_ERROR(Dump(out, (*v.list)[k], o, level + 1));
      }
      RETURN_IF_ERROR(newline(level));
      out.push_back(']');
      return absl::OkStatus();
    }
    case Kind::kDict: {
      if (v.dict->items.empty()) {
        out += "{}";
        return absl::OkStatus();
      }
      std::vector<std::pair<std::string, const Value*>> entries;
      for (const auto& [k, val] : v.dict->items) {
        ASSIGN_OR_RETURN(std::string key, JsonKey(k));
        entries.emplace_back(std::move(key), &val);
      }
      if (o.sort_keys) {
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
      }
      out.push_back('{');
      for (size_t k = 0; k < entries.size(); ++k) {
        if (k) RETURN_IF_ERROR(separator(item_sep));
        RETURN_IF_ERROR(newline(level + 1));
        JsonString(out, entries[k].first, o.ensure_ascii);
        RETURN_IF_ERROR(separator(key_sep));
        RETURN_IF_ERROR(Dump(out, *entries[k].second, o, level + 1));
      }
      RETURN_IF_ERROR(newline(level));
      out.push_back('}');
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("tojson: Object of type ", TypeName(v), " is not JSON serializable"));
  }
}

}  // namespace

absl::StatusOr<std::string> JsonDumps(const Value& v, const JsonDumpOptions& opts) {
  std::string out;
  RETURN_IF_ERROR(Dump(out, v, opts, 0));
  return out;
}

template <typename Json>
Value FromJsonImpl(const Json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return Value::None();
    case nlohmann::json::value_t::boolean: return Value::Bool(j.template get<bool>());
    case nlohmann::json::value_t::number_integer: return Value::Int(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      uint64_t u = j.template get<uint64_t>();
      return u <= static_cast<uint64_t>(INT64_MAX) ? Value::Int(static_cast<int64_t>(u))
                                                   : Value::Float(static_cast<double>(u));
    }
    case nlohmann::json::value_t::number_float: return Value::Float(j.template get<double>());
    case nlohmann::json::value_t::string: return Value::Str(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      List items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(FromJsonImpl(e));
      return Value::MakeList(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      auto d = std::make_shared<Dict>();
      d->items.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) d->items.emplace_back(Value::Str(it.key()), FromJsonImpl(*it));
      return Value::MakeDict(std::move(d));
    }
    default: return Value::None();
  }
}

Value FromJson(const nlohmann::ordered_json& j) { return FromJsonImpl(j); }
Value FromJson(const nlohmann::json& j) { return FromJsonImpl(j); }

}  // namespace tessera::chat::jinja
