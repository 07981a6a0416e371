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

bool IsNumeric(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  const auto c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

bool IsPunctuation(char32_t cp) {
  if (cp < 0x80) return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) || (cp >= 0x5B && cp <= 0x60) ||
                        (cp >= 0x7B && cp <= 0x7E);
  const auto c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
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
