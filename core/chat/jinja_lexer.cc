// Tokenizer of chat templates; the rules are listed in jinja_lexer.h.
#include "core/chat/jinja_lexer.h"

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/chat/jinja_value.h"

namespace tessera::chat::jinja {
namespace {

absl::Status Error(int line, const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", std::string(msg)));
}

// Python's str.rstrip() (Unicode whitespace) on UTF-8.
std::string_view RStripSpace(std::string_view s) {
  std::u32string cps = Utf8Decode(s);
  size_t keep = cps.size();
  while (keep > 0 && IsPySpace(cps[keep - 1])) --keep;
  return s.substr(0, Utf8Encode(std::u32string_view(cps).substr(0, keep)).size());
}

// Length of the whitespace run (Python's \s) starting at pos.
size_t SpaceRun(std::string_view s, size_t pos) {
  size_t k = pos;
  while (k < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[k]);
    if (c < 0x80) {
      if (!IsPySpace(c)) break;
      ++k;
      continue;
    }
    // Multi-byte: decode one code point.
    size_t n = (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    std::u32string cp = Utf8Decode(s.substr(k, n));
    if (cp.size() != 1 || !IsPySpace(cp[0])) break;
    k += n;
  }
  return k - pos;
}

int CountNewlines(std::string_view s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsNameStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsNameChar(char c) { return IsNameStart(c) || IsDigit(c); }
int HexVal(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Python unicode-escape decoding of a string literal's body.
absl::StatusOr<std::string> DecodeEscapes(std::string_view body, int line) {
  std::string out;
  for (size_t k = 0; k < body.size(); ++k) {
    char c = body[k];
    if (c != '\\' || k + 1 >= body.size()) {
      out.push_back(c);
      continue;
    }
    char e = body[++k];
    switch (e) {
      case '\n': break;
      case '\\': out.push_back('\\'); break;
      case '\'': out.push_back('\''); break;
      case '"': out.push_back('"'); break;
      case 'a': out.push_back('\a'); break;
      case 'b': out.push_back('\b'); break;
      case 'f': out.push_back('\f'); break;
      case 'n': out.push_back('\n'); break;
      case 'r': out.push_back('\r'); break;
      case 't': out.push_back('\t'); break;
      case 'v': out.push_back('\v'); break;
      case 'x':
      case 'u':
      case 'U': {
        size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        char32_t cp = 0;
        for (size_t j = 1; j <= n; ++j) {
          int h = k + j < body.size() ? HexVal(body[k + j]) : -1;
          if (h < 0) return Error(line, absl::StrCat("truncated \\", std::string(1, e), " escape in string literal"));
          cp = cp * 16 + h;
        }
        if (cp > 0x10FFFF) return Error(line, "illegal Unicode character in string literal");
        AppendUtf8(out, cp);
        k += n;
        break;
      }
      case 'N': return Error(line, "\\N{...} escapes in string literals are not supported");
      default:
        if (e >= '0' && e <= '7') {
          char32_t cp = e - '0';
          for (int j = 0; j < 2 && k + 1 < body.size() && body[k + 1] >= '0' && body[k + 1] <= '7'; ++j) {
            cp = cp * 8 + (body[++k] - '0');
          }
          AppendUtf8(out, cp);
        } else {
          out.push_back('\\');
          out.push_back(e);
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string src) : src_(std::move(src)) {}

  absl::StatusOr<std::vector<Token>> Run() {
    size_t pos = 0;
    bool line_starting = true;
    const size_t n = src_.size();
    while (pos < n) {
      size_t q = pos;
      while (q < n && !(src_[q] == '{' && q + 1 < n && (src_[q + 1] == '{' || src_[q + 1] == '%' || src_[q + 1] == '#'))) ++q;
      std::string_view data(src_.data() + pos, q - pos);
      if (q >= n) {
        Emit(Tok::kData, std::string(data));
        line_ += CountNewlines(data);
        break;
      }
      char kind = src_[q + 1];
      char sign = q + 2 < n && (src_[q + 2] == '-' || src_[q + 2] == '+') ? src_[q + 2] : 0;
      std::string_view kept = data;
      if (sign == '-') {
        kept = RStripSpace(data);
      } else if (sign != '+' && kind != '{') {
        size_t l_pos = data.rfind('\n');
        l_pos = l_pos == std::string_view::npos ? 0 : l_pos + 1;
        if (l_pos > 0 || line_starting) {
          bool only_blank = data.find_first_not_of(" \t", l_pos) == std::string_view::npos;
          if (only_blank) kept = data.substr(0, l_pos);
        }
      }
      if (!kept.empty()) Emit(Tok::kData, std::string(kept));
      line_ += CountNewlines(data);
      pos = q + 2 + (sign ? 1 : 0);
      if (kind == '#') {
        size_t e = src_.find("#}", pos);
        if (e == std::string::npos) return Error(line_, "unterminated comment ({# without #})");
        line_ += CountNewlines(std::string_view(src_).substr(pos, e - pos));
        bool strip = e > pos && src_[e - 1] == '-';
        bool keep = e > pos && src_[e - 1] == '+';
        pos = e + 2;
        pos = AfterTagEnd(pos, strip, keep);
      } else {
        bool block = kind == '%';
        Emit(block ? Tok::kBlockBegin : Tok::kVarBegin, "");
        absl::StatusOr<size_t> end = LexTag(pos, block);
        if (!end.ok()) return end.status();
        pos = *end;
      }
      line_starting = pos > 0 && src_[pos - 1] == '\n';
    }
    Emit(Tok::kEof, "");
    return std::move(tokens_);
  }

 private:
  void Emit(Tok t, std::string text) {
    Token tok;
    tok.type = t;
    tok.text = std::move(text);
    tok.line = line_;
    tokens_.push_back(std::move(tok));
  }

  // Position after a tag's closing delimiter, applying `-` (strip all) or trim_blocks (one "\n").
  size_t AfterTagEnd(size_t pos, bool strip, bool keep, bool trim_newline = true) {
    if (strip) {
      size_t run = SpaceRun(src_, pos);
      line_ += CountNewlines(std::string_view(src_).substr(pos, run));
      return pos + run;
    }
    if (!keep && trim_newline && pos < src_.size() && src_[pos] == '\n') {
      ++line_;
      return pos + 1;
    }
    return pos;
  }

  // Lexes the inside of {% %} or {{ }} from pos; returns the position after the closing delimiter.
  absl::StatusOr<size_t> LexTag(size_t pos, bool block) {
    const size_t n = src_.size();
    int depth = 0;
    std::string_view s(src_);
    while (true) {
      size_t run = SpaceRun(src_, pos);
      line_ += CountNewlines(s.substr(pos, run));
      pos += run;
      if (pos >= n) return Error(line_, block ? "unexpected end of template: missing %}" : "unexpected end of template: missing }}");
      if (depth == 0) {
        if (block) {
          if (s.substr(pos, 3) == "-%}") {
            Emit(Tok::kBlockEnd, "");
            return AfterTagEnd(pos + 3, true, false);
          }
          if (s.substr(pos, 3) == "+%}") {
            Emit(Tok::kBlockEnd, "");
            return pos + 3;
          }
          if (s.substr(pos, 2) == "%}") {
            Emit(Tok::kBlockEnd, "");
            return AfterTagEnd(pos + 2, false, false);
          }
        } else {
          if (s.substr(pos, 3) == "-}}") {
            Emit(Tok::kVarEnd, "");
            return AfterTagEnd(pos + 3, true, false);
          }
          if (s.substr(pos, 2) == "}}") {
            Emit(Tok::kVarEnd, "");
            return pos + 2;
          }
        }
      }
      char c = s[pos];
      if (IsNameStart(c)) {
        size_t e = pos;
        while (e < n && IsNameChar(s[e])) ++e;
        Emit(Tok::kName, std::string(s.substr(pos, e - pos)));
        pos = e;
      } else if (c == '\'' || c == '"') {
        size_t e = pos + 1;
        while (e < n && s[e] != c) e += s[e] == '\\' ? 2 : 1;
        if (e >= n) return Error(line_, "unterminated string literal");
        std::string_view body = s.substr(pos + 1, e - pos - 1);
        absl::StatusOr<std::string> decoded = DecodeEscapes(body, line_);
        if (!decoded.ok()) return decoded.status();
        Emit(Tok::kString, std::move(*decoded));
        line_ += CountNewlines(body);
        pos = e + 1;
      } else if (IsDigit(c)) {
        pos = LexNumber(pos);
      } else {
        static const char* kOps[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[", "]",
                                     "(", ")", "{", "}", ">", "<", "=", ".", ":", "|", ",", ";"};
        std::string op;
        for (const char* o : kOps) {
          if (s.substr(pos, std::char_traits<char>::length(o)) == o) {
            op = o;
            break;
          }
        }
        if (op.empty()) return Error(line_, absl::StrCat("unexpected character '", std::string(1, c), "'"));
        if (op == "(" || op == "[" || op == "{") ++depth;
        if (op == ")" || op == "]" || op == "}") {
          if (depth == 0) return Error(line_, absl::StrCat("unexpected '", op, "'"));
          --depth;
        }
        Emit(Tok::kOp, op);
        pos += op.size();
      }
    }
  }

  // Integer `(\d+_)*\d+` or float (fraction and/or exponent); after a `.` only integers (x.0.1).
  size_t LexNumber(size_t pos) {
    std::string_view s(src_);
    const size_t n = s.size();
    auto digits = [&](size_t p) {
      size_t e = p;
      while (e < n && (IsDigit(s[e]) || (s[e] == '_' && e + 1 < n && IsDigit(s[e + 1]) && e > p))) ++e;
      return e;
    };
    size_t e = digits(pos);
    bool after_dot = !tokens_.empty() && tokens_.back().type == Tok::kOp && tokens_.back().text == ".";
    bool is_float = false;
    if (!after_dot) {
      size_t f = e;
      if (f + 1 < n && s[f] == '.' && IsDigit(s[f + 1])) {
        f = digits(f + 1);
        is_float = true;
      }
      if (f < n && (s[f] == 'e' || s[f] == 'E')) {
        size_t g = f + 1;
        if (g < n && (s[g] == '+' || s[g] == '-')) ++g;
        if (g < n && IsDigit(s[g])) {
          f = digits(g);
          is_float = true;
        }
      }
      if (is_float) e = f;
    }
    std::string text;
    for (char c : s.substr(pos, e - pos)) {
      if (c != '_') text.push_back(c);
    }
    Token tok;
    tok.line = line_;
    tok.text = text;
    if (is_float) {
      tok.type = Tok::kFloat;
      tok.fval = std::strtod(text.c_str(), nullptr);
    } else {
      tok.type = Tok::kInt;
      tok.ival = std::strtoll(text.c_str(), nullptr, 10);
    }
    tokens_.push_back(std::move(tok));
    return e;
  }

  std::string src_;
  int line_ = 1;
  std::vector<Token> tokens_;
};

}  // namespace

absl::StatusOr<std::vector<Token>> Lex(std::string_view source) {
  // Newline normalization and keep_trailing_newline=False, as jinja2 does before lexing.
  std::string src;
  src.reserve(source.size());
  for (size_t k = 0; k < source.size(); ++k) {
    if (source[k] == '\r') {
      src.push_back('\n');
      if (k + 1 < source.size() && source[k + 1] == '\n') ++k;
    } else {
      src.push_back(source[k]);
    }
  }
  if (!src.empty() && src.back() == '\n') src.pop_back();
  return Lexer(std::move(src)).Run();
}

}  // namespace tessera::chat::jinja
