// Metaspace pre-tokenizer (SentencePiece): every ' ' becomes `replacement`; the replacement is put in
// front of a piece that does not start with it (prepend_scheme "always"; "first": only the piece that
// starts the input; "never"); with split, each piece is cut before every replacement char
// (MergedWithNext).
#include "core/tokenizer/hf/pre_tokenizer.h"
#include "core/util/status_macros.h"

namespace tessera::hf {

namespace {

enum class Prepend { kAlways, kFirst, kNever };

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(char32_t replacement, Prepend prepend, bool split)
      : replacement_cp_(replacement), prepend_(prepend), split_(split) {
    AppendUtf8(replacement_, replacement);
  }

  void PreTokenize(Pieces& pieces) const override {
    SplitPieces(pieces, [&](Piece& p, Pieces& out) {
      std::string text;
      text.reserve(p.text.size() + replacement_.size());
      for (char c : p.text) {
        if (c == ' ') {
          text.append(replacement_);
        } else {
          text.push_back(c);
        }
      }
      const bool starts = text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (prepend_ == Prepend::kAlways || (prepend_ == Prepend::kFirst && p.original_start == 0))) {
        text.insert(0, replacement_);
      }
      p.text.swap(text);
      if (!split_) {
        out.push_back(std::move(p));
        return;
      }
      const char32_t r = replacement_cp_;
      SplitBySpans(p, CharSpans(p.text, [r](char32_t cp) { return cp == r; }), SplitBehavior::kMergedWithNext, out);
    });
  }

 private:
  char32_t replacement_cp_;
  std::string replacement_;
  Prepend prepend_;
  bool split_;
};

}  // namespace

// Also used by the Metaspace decoder: the replacement char and the prepend scheme.
absl::Status ParseMetaspace(const Json& node, const std::string& where, char32_t& replacement, int& prepend,
                            bool& split) {
  RETURN_IF_ERROR(
      CheckKeys(node, {"type", "replacement", "prepend_scheme", "split", "add_prefix_space", "str_rep"}, where));
  ASSIGN_OR_RETURN(std::string rep, GetString(node, "replacement", where));
  size_t i = 0;
  if (rep.empty() || (replacement = NextCodePoint(rep, i), i != rep.size())) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".replacement must be one character"));
  }
  ASSIGN_OR_RETURN(split, GetBool(node, "split", where, true));
  if (node.contains("prepend_scheme") && !node["prepend_scheme"].is_null()) {
    ASSIGN_OR_RETURN(std::string scheme, GetString(node, "prepend_scheme", where));
    if (scheme == "always") {
      prepend = static_cast<int>(Prepend::kAlways);
    } else if (scheme == "first") {
      prepend = static_cast<int>(Prepend::kFirst);
    } else if (scheme == "never") {
      prepend = static_cast<int>(Prepend::kNever);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(where, ".prepend_scheme: unsupported value \"", scheme, "\""));
    }
  } else {
    // Files written before prepend_scheme existed carry add_prefix_space.
    ASSIGN_OR_RETURN(bool add_prefix_space, GetBool(node, "add_prefix_space", where, true));
    prepend = static_cast<int>(add_prefix_space ? Prepend::kAlways : Prepend::kNever);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeMetaspacePreTokenizer(const Json& node, const std::string& where) {
  char32_t replacement;
  int prepend;
  bool split;
  RETURN_IF_ERROR(ParseMetaspace(node, where, replacement, prepend, split));
  return std::make_unique<MetaspacePreTokenizer>(replacement, static_cast<Prepend>(prepend), split);
}

}  // namespace tessera::hf
