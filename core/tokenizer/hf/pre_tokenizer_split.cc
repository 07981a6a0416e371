// Split pre-tokenizer: cuts each piece at the matches of a string or regex pattern (or, with invert, at
// the text between matches), keeping the delimiters as `behavior` says.
#include "core/tokenizer/hf/pattern.h"
#include "core/tokenizer/hf/pre_tokenizer.h"
#include "core/util/status_macros.h"

namespace tessera::hf {

namespace {

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> re, SplitBehavior behavior, bool invert)
      : re_(std::move(re)), behavior_(behavior), invert_(invert) {}

  void PreTokenize(Pieces& pieces) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    SplitPieces(pieces, [&](Piece& p, Pieces& out) {
      matches.clear();
      re_->FindAll(p.text, matches);
      std::vector<Span> spans = SpansFromMatches(p.text.size(), matches);
      if (invert_) {
        for (Span& s : spans) s.is_match = !s.is_match;
      }
      SplitBySpans(p, spans, behavior_, out);
    });
  }

 private:
  std::unique_ptr<Regex> re_;
  SplitBehavior behavior_;
  bool invert_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeSplitPreTokenizer(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type", "pattern", "behavior", "invert"}, where));
  ASSIGN_OR_RETURN(auto re, ParsePattern(node.value("pattern", Json()), where));
  ASSIGN_OR_RETURN(SplitBehavior behavior, ParseSplitBehavior(node.value("behavior", Json()), where));
  ASSIGN_OR_RETURN(bool invert, GetBool(node, "invert", where, false));
  return std::make_unique<SplitPreTokenizer>(std::move(re), behavior, invert);
}

}  // namespace tessera::hf
