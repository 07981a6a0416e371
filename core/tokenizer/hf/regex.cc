#include "core/tokenizer/hf/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cctype>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/tokenizer/hf/unicode.h"
#include "core/tokenizer/hf/unicode_tables.inc"

namespace tessera::hf {

namespace {

// Per-thread match data (one pair: we only read the whole match) and a JIT stack large enough for long
// whitespace runs under lookahead.
struct ThreadMatchState {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
  // For the interpreter retry: no match or heap limit, so a match never stops early (only slower).
  pcre2_match_context* unlimited = pcre2_match_context_create(nullptr);
  ThreadMatchState() {
    pcre2_jit_stack_assign(context, nullptr, stack);
    pcre2_set_match_limit(unlimited, UINT32_MAX);
    pcre2_set_depth_limit(unlimited, UINT32_MAX);
    pcre2_set_heap_limit(unlimited, UINT32_MAX);
  }
  ~ThreadMatchState() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(unlimited);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

ThreadMatchState& State() {
  thread_local ThreadMatchState state;
  return state;
}

absl::Status Compile(std::string_view pattern, uint32_t extra, std::string_view where, std::string_view original,
                     void*& code_out) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | (extra != 0 ? extra : PCRE2_UCP), &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(absl::StrCat(std::string(where), ": regex \"", std::string(original),
                                                   "\" does not compile (", reinterpret_cast<const char*>(message),
                                                   " at offset ", offset, ")"));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter where JIT is unavailable
  code_out = code;
  return absl::OkStatus();
}

}  // namespace

namespace {

// The PCRE2 class items (for use inside [...]) a class escape stands for, or "" if it is not rewritten.
std::string ClassItems(std::string_view name, RegexSyntax syntax) {
  using namespace unicode_tables;  // NOLINT
  if (name == "s") return R"(\p{White_Space})";
  if (name == "w") {
    return syntax == RegexSyntax::kRustRegex
               ? std::string(R"(\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control})") + kRustExtraW
               : std::string(R"(\p{Alphabetic}\p{M}\p{Nd}\p{Pc})") + kOnigExtraW;
  }
  if (syntax == RegexSyntax::kRustRegex) return "";
  if (name == "d") return std::string(R"(\d)") + kOnigExtraD;
  if (name == "L") return std::string(R"(\p{L})") + kOnigExtraL;
  if (name == "N") return std::string(R"(\p{N})") + kOnigExtraN;
  if (name == "M") return std::string(R"(\p{M})") + kOnigExtraM;
  if (name == "P") return std::string(R"(\p{P})") + kOnigExtraP;
  if (name == "S") return std::string(R"(\p{S})") + kOnigExtraS;
  return "";
}

}  // namespace

absl::StatusOr<std::string> TranslatePattern(std::string_view p, std::string_view where, RegexSyntax syntax) {
  const auto refuse = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(where), ": regex \"", std::string(p), "\": ", std::string(why), " is not supported"));
  };
  std::string out;
  bool in_class = false;
  size_t class_start = 0;  // index in p just after '[' or '[^'
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      // The class escape at p[i..end): its name and whether it is negated.
      std::string name;
      bool negated = false;
      size_t end = i + 2;
      if (e == 's' || e == 'w' || e == 'd' || e == 'S' || e == 'W' || e == 'D') {
        name = std::string(1, static_cast<char>(std::tolower(e)));
        negated = std::isupper(e) != 0;
      } else if (e == 'p' || e == 'P') {
        negated = e == 'P';
        if (i + 2 < p.size() && p[i + 2] == '{') {
          const size_t close = p.find('}', i + 3);
          if (close == std::string_view::npos) return refuse("an unterminated \\p{");
          name = std::string(p.substr(i + 3, close - i - 3));
          end = close + 1;
          if (!name.empty() && name[0] == '^') {
            negated = !negated;
            name.erase(0, 1);
          }
        } else if (i + 2 < p.size()) {
          name = std::string(1, p[i + 2]);
          end = i + 3;
        }
      } else if (e == 'h' || e == 'H') {
        return refuse("\\h/\\H (hex digit in Oniguruma)");
      } else if (e == 'u' && syntax == RegexSyntax::kOniguruma) {
        // Oniguruma's \uHHHH is PCRE2's \x{HHHH}.
        if (i + 6 > p.size() || !std::all_of(p.begin() + i + 2, p.begin() + i + 6, [](char h) {
              return std::isxdigit(static_cast<unsigned char>(h)) != 0;
            })) {
          return refuse("\\u without four hex digits");
        }
        out += absl::StrCat("\\x{", std::string(p.substr(i + 2, 4)), "}");
        i += 5;
        continue;
      }
      const std::string items = name.empty() ? std::string() : ClassItems(name, syntax);
      if (items.empty()) {
        out.append(p.substr(i, 2));  // any other escape (or property) means the same in PCRE2
        ++i;
        continue;
      }
      if (in_class && negated) return refuse("a negated class escape inside [...]");
      if (in_class) {
        out += items;
      } else {
        out += absl::StrCat(negated ? "[^" : "[", items, "]");
      }
      i = end - 1;
      continue;
    }
    if (in_class) {
      if (c == ']' && i != class_start) {
        in_class = false;
      } else if (c == '[') {
        if (i + 1 < p.size() && p[i + 1] == ':') {
          const size_t close = p.find(":]", i + 2);
          if (close == std::string_view::npos) return refuse("an unterminated [:class:]");
          out.append(p.substr(i, close + 2 - i));
          i = close + 1;
          continue;
        }
        return refuse("a nested character class");
      } else if (c == '&' && i + 1 < p.size() && p[i + 1] == '&') {
        return refuse("class intersection (&&)");
      }
      out.push_back(c);
      continue;
    }
    if (c == '[') {
      in_class = true;
      out.push_back(c);
      if (i + 1 < p.size() && p[i + 1] == '^') {
        out.push_back('^');
        ++i;
      }
      class_start = i + 1;
      continue;
    }
    out.push_back(c);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::Create(std::string_view pattern, std::string_view where,
                                                     RegexSyntax syntax) {
  auto translated = TranslatePattern(pattern, where, syntax);
  if (!translated.ok()) return translated.status();
  void* code = nullptr;
  absl::Status st = Compile(*translated, 0, where, pattern, code);
  if (!st.ok()) return st;
  return std::unique_ptr<Regex>(new Regex(code));
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::Literal(std::string_view text, std::string_view where) {
  if (text.empty())
    return absl::InvalidArgumentError(absl::StrCat(std::string(where), ": an empty pattern is not supported"));
  void* code = nullptr;
  absl::Status st = Compile(text, PCRE2_LITERAL, where, text, code);
  if (!st.ok()) return st;
  return std::unique_ptr<Regex>(new Regex(code));
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

bool Regex::Find(std::string_view text, size_t from, size_t& start, size_t& end) const {
  ThreadMatchState& st = State();
  const auto* code = static_cast<const pcre2_code*>(code_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  int rc = pcre2_match(code, subject, text.size(), from, PCRE2_NO_UTF_CHECK, st.data, st.context);
  if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
    // A resource limit (e.g. the JIT stack on a huge input), not an answer: ask the interpreter without
    // limits rather than report "no match" and encode differently.
    rc = pcre2_match(code, subject, text.size(), from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, st.data, st.unlimited);
  }
  if (rc < 0) return false;
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.data);
  start = ov[0];
  end = ov[1];
  return true;
}

void Regex::FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  size_t pos = 0;
  bool have_last = false;
  size_t last_end = 0;
  while (pos <= text.size()) {
    size_t s, e;
    if (!Find(text, pos, s, e)) break;
    if (s == e && have_last && last_end == e) {
      // onig's find_iter: no empty match right after the previous one; step one char and retry.
      if (pos >= text.size()) break;
      pos += Utf8Length(static_cast<unsigned char>(text[pos]));
      continue;
    }
    out.emplace_back(s, e);
    have_last = true;
    last_end = e;
    pos = e;  // after an empty match the search finds it again at e, which the rule above skips
  }
}

}  // namespace tessera::hf
