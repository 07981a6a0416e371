// PreTokenizer: one stage of tokenizers' `pre_tokenizer` tree. It splits (and may rewrite) the pieces not
// yet tokenized; pieces that are added tokens pass through untouched and empty pieces are dropped
// (SplitPieces). CreatePreTokenizer builds one from its tokenizer.json node through the type -> factory
// table in pre_tokenizer_registry.cc.
#pragma once

#include <memory>
#include <string>

#include "core/tokenizer/hf/node.h"
#include "core/tokenizer/hf/piece.h"

namespace tessera::hf {

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void PreTokenize(Pieces& pieces) const = 0;
};

absl::StatusOr<std::unique_ptr<PreTokenizer>> CreatePreTokenizer(const Json& node, const std::string& where);

// Spans of the chars for which pred(cp) holds, each char its own match (tokenizers' Fn(char) pattern).
template <typename Pred>
std::vector<Span> CharSpans(std::string_view text, Pred&& pred);

}  // namespace tessera::hf

#include "core/tokenizer/hf/unicode.h"

namespace tessera::hf {

template <typename Pred>
std::vector<Span> CharSpans(std::string_view text, Pred&& pred) {
  std::vector<Span> spans;
  if (text.empty()) {
    spans.push_back({0, 0, false});
    return spans;
  }
  size_t last = 0, i = 0;
  while (i < text.size()) {
    const size_t b = i;
    const char32_t cp = NextCodePoint(text, i);
    if (pred(cp)) {
      if (last < b) spans.push_back({last, b, false});
      spans.push_back({b, i, true});
      last = i;
    }
  }
  if (last < text.size()) spans.push_back({last, text.size(), false});
  return spans;
}

}  // namespace tessera::hf
