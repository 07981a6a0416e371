// ByteLevel pre-tokenizer: optionally a leading space (add_prefix_space, on every piece not starting
// with ' '), optionally the GPT-2 regex split (use_regex, Isolated), then every byte mapped to its
// ByteLevel char. trim_offsets only moves offsets and does not change ids.
#include "core/tokenizer/hf/byte_level.h"
#include "core/tokenizer/hf/pre_tokenizer.h"
#include "core/tokenizer/hf/regex.h"
#include "core/util/status_macros.h"

namespace tessera::hf {

namespace {

constexpr char kGpt2Pattern[] = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> re)
      : add_prefix_space_(add_prefix_space), re_(std::move(re)) {}

  void PreTokenize(Pieces& pieces) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    SplitPieces(pieces, [&](Piece& p, Pieces& out) {
      if (add_prefix_space_ && (p.text.empty() || p.text[0] != ' ')) p.text.insert(0, " ");
      if (re_ == nullptr) {
        out.push_back(std::move(p));
      } else {
        matches.clear();
        re_->FindAll(p.text, matches);
        SplitBySpans(p, SpansFromMatches(p.text.size(), matches), SplitBehavior::kIsolated, out);
      }
      for (Piece& q : out) {
        std::string mapped;
        mapped.reserve(q.text.size() * 2);
        AppendByteLevel(mapped, q.text);
        q.text.swap(mapped);
      }
    });
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> re_;  // null when use_regex is false
};

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeByteLevelPreTokenizer(const Json& node, const std::string& where) {
  RETURN_IF_ERROR(CheckKeys(node, {"type", "add_prefix_space", "trim_offsets", "use_regex"}, where));
  ASSIGN_OR_RETURN(bool add_prefix_space, GetBool(node, "add_prefix_space", where, true));
  ASSIGN_OR_RETURN(bool use_regex, GetBool(node, "use_regex", where, true));
  std::unique_ptr<Regex> re;
  if (use_regex) {
    ASSIGN_OR_RETURN(re, Regex::Create(kGpt2Pattern, where));
  }
  return std::make_unique<ByteLevelPreTokenizer>(add_prefix_space, std::move(re));
}

}  // namespace tessera::hf
