// Whitespace pre-tokenizer: keeps the runs of word chars and the runs of other non-space chars
// (regex \w+|[^\w\s]+, everything else removed).
#include "core/tokenizer/hf/pre_tokenizer.h"
#include "core/tokenizer/hf/regex.h"
#include "core/util/status_macros.h"

namespace tessera::hf {

namespace {

class WhitespacePreTokenizer final : public PreTokenizer {
 public:
  explicit WhitespacePreTokenizer(std::unique_ptr<Regex> re) : re_(std::move(re)) {}
  void PreTokenize(Pieces& pieces) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    SplitPieces(pieces, [&](Piece& p, Pieces& out) {
      matches.clear();
      re_->FindAll(p.text, matches);
      std::vector<Span> spans = SpansFromMatches(p.text.size(), matches);
      for (Span& s : spans) s.is_match = !s.is_match;  // Invert + Removed: drop what is not matched
      SplitBySpans(p, spans, SplitBehavior::kRemoved, out);
    });
  }

 private:
  std::unique_ptr<Regex> re_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeWhitespacePreTokenizer(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type"}, where));
  ASSIGN_OR_RETURN(auto re, Regex::Create(R"(\w+|[^\w\s]+)", where, RegexSyntax::kRustRegex));
  return std::make_unique<WhitespacePreTokenizer>(std::move(re));
}

}  // namespace tessera::hf
