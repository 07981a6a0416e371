// Piece: one span of text flowing through the tokenizer pipeline (tokenizers' PreTokenizedString split).
//
// A piece holds its current (normalized, pre-tokenized) text, the byte offset in the input where it
// starts (only "is it 0" is ever asked: Metaspace's prepend_scheme "first"), and the id of the added token
// it is, if any (such pieces are never normalized, split or tokenized again).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tessera::hf {

struct Piece {
  std::string text;
  size_t original_start = 0;
  int32_t added_id = -1;
};
using Pieces = std::vector<Piece>;

// One span of a piece's text and whether it is a pattern match (tokenizers' Pattern::find_matches); the
// spans cover the whole text, in order.
struct Span {
  size_t start;
  size_t end;
  bool is_match;
};

// Builds the covering span list from the matches of a pattern ([{0,0,false}] for empty text).
std::vector<Span> SpansFromMatches(size_t text_size, const std::vector<std::pair<size_t, size_t>>& matches);

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
absl::StatusOr<SplitBehavior> ParseSplitBehavior(const nlohmann::json& value, const std::string& where);

// Appends the sub-pieces of `piece` cut at `spans` with `behavior` (tokenizers' NormalizedString::split).
void SplitBySpans(const Piece& piece, const std::vector<Span>& spans, SplitBehavior behavior, Pieces& out);

// Replaces every not-yet-tokenized piece by fn(piece, out) and drops the empty results
// (tokenizers' PreTokenizedString::split).
template <typename Fn>
void SplitPieces(Pieces& pieces, Fn&& fn) {
  Pieces next;
  next.reserve(pieces.size());
  Pieces parts;
  for (Piece& p : pieces) {
    if (p.added_id >= 0) {
      next.push_back(std::move(p));
      continue;
    }
    parts.clear();
    fn(p, parts);
    for (Piece& q : parts) {
      if (!q.text.empty()) next.push_back(std::move(q));
    }
  }
  pieces.swap(next);
}

}  // namespace tessera::hf
