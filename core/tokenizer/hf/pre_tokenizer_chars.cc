// The pre-tokenizers that split on a per-char predicate:
//   Digits: numeric chars (Rust char::is_numeric: categories Nd, Nl, No), one by one (individual_digits)
//           or runs of them (Contiguous);
//   Punctuation: ASCII punctuation or Unicode P* chars, with `behavior` (default Isolated);
//   WhitespaceSplit: White_Space chars removed.
#include "core/tokenizer/hf/pre_tokenizer.h"
#include "core/util/status_macros.h"
#include "utf8proc.h"

namespace tessera::hf {

namespace {

// `tokenizers` takes these properties from Rust tables of other Unicode versions than utf8proc 2.8's
// (Unicode 15): char::is_numeric from std (Unicode 16), is_punctuation from the unicode_categories crate
// (Unicode 9). The differences, measured code point by code point against tokenizers 0.23.3:
struct Range {
  char32_t lo, hi;
};
// Numeric in Unicode 16 only.
constexpr Range kNumericSince16[] = {{0x10D40, 0x10D49}, {0x116D0, 0x116E3}, {0x11BF0, 0x11BF9},
                                     {0x11DE0, 0x11DE9}, {0x16130, 0x16139}, {0x16D70, 0x16D79},
                                     {0x16FF4, 0x16FF6}, {0x1CCF0, 0x1CCF9}, {0x1E5F1, 0x1E5FA}};
// Punctuation in Unicode 15 but not in the crate's Unicode 9 tables.
constexpr Range kPunctuationAfter9[] = {{0x61D, 0x61D},     {0x9FD, 0x9FD},     {0xA76, 0xA76},     {0xC77, 0xC77},
                                        {0xC84, 0xC84},     {0x1B7D, 0x1B7E},   {0x2E43, 0x2E4F},   {0x2E52, 0x2E5D},
                                        {0x10EAD, 0x10EAD}, {0x10F55, 0x10F59}, {0x10F86, 0x10F89}, {0x1144B, 0x1144F},
                                        {0x1145A, 0x1145B}, {0x1145D, 0x1145D}, {0x11660, 0x1166C}, {0x116B9, 0x116B9},
                                        {0x1183B, 0x1183B}, {0x11944, 0x11946}, {0x119E2, 0x119E2}, {0x11A3F, 0x11A46},
                                        {0x11A9A, 0x11A9C}, {0x11A9E, 0x11AA2}, {0x11B00, 0x11B09}, {0x11C41, 0x11C45},
                                        {0x11C70, 0x11C71}, {0x11EF7, 0x11EF8}, {0x11F43, 0x11F4F}, {0x11FFF, 0x11FFF},
                                        {0x12FF1, 0x12FF2}, {0x16E97, 0x16E9A}, {0x16FE2, 0x16FE2}, {0x1E95E, 0x1E95F}};
// Punctuation in Unicode 9, another category since.
constexpr Range kPunctuationUntil9[] = {{0x166D, 0x166D}, {0x111C9, 0x111C9}};

template <size_t N>
bool In(const Range (&table)[N], char32_t cp) {
  for (const Range& r : table) {
    if (cp >= r.lo && cp <= r.hi) return true;
  }
  return false;
}

bool IsNumeric(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  const auto c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO || In(kNumericSince16, cp);
}

bool IsPunctuation(char32_t cp) {
  if (cp < 0x80)
    return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) || (cp >= 0x5B && cp <= 0x60) ||
           (cp >= 0x7B && cp <= 0x7E);
  if (In(kPunctuationUntil9, cp)) return true;
  const auto c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO && !In(kPunctuationAfter9, cp);
}

template <bool (*Pred)(char32_t)>
class CharSplitPreTokenizer final : public PreTokenizer {
 public:
  explicit CharSplitPreTokenizer(SplitBehavior behavior) : behavior_(behavior) {}
  void PreTokenize(Pieces& pieces) const override {
    SplitPieces(pieces, [&](Piece& p, Pieces& out) { SplitBySpans(p, CharSpans(p.text, Pred), behavior_, out); });
  }

 private:
  SplitBehavior behavior_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeDigitsPreTokenizer(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type", "individual_digits"}, where));
  ASSIGN_OR_RETURN(bool individual, GetBool(node, "individual_digits", where, false));
  return std::make_unique<CharSplitPreTokenizer<IsNumeric>>(individual ? SplitBehavior::kIsolated
                                                                       : SplitBehavior::kContiguous);
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePunctuationPreTokenizer(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type", "behavior"}, where));
  SplitBehavior behavior = SplitBehavior::kIsolated;
  if (node.contains("behavior") && !node["behavior"].is_null()) {
    ASSIGN_OR_RETURN(behavior, ParseSplitBehavior(node["behavior"], where));
  }
  return std::make_unique<CharSplitPreTokenizer<IsPunctuation>>(behavior);
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeWhitespaceSplitPreTokenizer(const Json& node,
                                                                              const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type"}, where));
  return std::make_unique<CharSplitPreTokenizer<IsWhitespace>>(SplitBehavior::kRemoved);
}

}  // namespace tessera::hf
