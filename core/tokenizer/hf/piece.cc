#include "core/tokenizer/hf/piece.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tessera::hf {

std::vector<Span> SpansFromMatches(size_t text_size, const std::vector<std::pair<size_t, size_t>>& matches) {
  std::vector<Span> spans;
  if (text_size == 0) {
    spans.push_back({0, 0, false});
    return spans;
  }
  spans.reserve(matches.size() * 2 + 1);
  size_t prev = 0;
  for (const auto& [s, e] : matches) {
    if (prev != s) spans.push_back({prev, s, false});
    spans.push_back({s, e, true});
    prev = e;
  }
  if (prev != text_size) spans.push_back({prev, text_size, false});
  return spans;
}

absl::StatusOr<SplitBehavior> ParseSplitBehavior(const nlohmann::json& value, const std::string& where) {
  if (value.is_string()) {
    const std::string v = value.get<std::string>();
    if (v == "Removed") return SplitBehavior::kRemoved;
    if (v == "Isolated") return SplitBehavior::kIsolated;
    if (v == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
    if (v == "MergedWithNext") return SplitBehavior::kMergedWithNext;
    if (v == "Contiguous") return SplitBehavior::kContiguous;
  }
  return absl::InvalidArgumentError(absl::StrCat(where, ".behavior: unsupported value ", value.dump()));
}

void SplitBySpans(const Piece& piece, const std::vector<Span>& spans, SplitBehavior behavior, Pieces& out) {
  // (start, end, remove) after applying the behavior, as NormalizedString::split computes it.
  struct Cut {
    size_t start, end;
    bool remove;
  };
  std::vector<Cut> cuts;
  cuts.reserve(spans.size());
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Span& s : spans) cuts.push_back({s.start, s.end, false});
      break;
    case SplitBehavior::kRemoved:
      for (const Span& s : spans) cuts.push_back({s.start, s.end, s.is_match});
      break;
    case SplitBehavior::kContiguous: {
      bool previous = false;
      for (const Span& s : spans) {
        if (s.is_match == previous && !cuts.empty()) {
          cuts.back().end = s.end;
        } else {
          cuts.push_back({s.start, s.end, false});
        }
        previous = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous = false;
      for (const Span& s : spans) {
        if (s.is_match && !previous && !cuts.empty()) {
          cuts.back().end = s.end;
        } else {
          cuts.push_back({s.start, s.end, false});
        }
        previous = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous = false;
      for (size_t k = spans.size(); k-- > 0;) {
        const Span& s = spans[k];
        if (s.is_match && !previous && !cuts.empty()) {
          cuts.back().start = s.start;
        } else {
          cuts.push_back({s.start, s.end, false});
        }
        previous = s.is_match;
      }
      std::reverse(cuts.begin(), cuts.end());
      break;
    }
  }
  for (const Cut& c : cuts) {
    if (c.remove) continue;
    // A slice keeps the input offset of its first byte; only "starts at 0" matters downstream, and a
    // slice that does not start the piece never does.
    out.push_back(Piece{piece.text.substr(c.start, c.end - c.start),
                        c.start == 0 ? piece.original_start : piece.original_start + c.start, -1});
  }
}

}  // namespace tessera::hf
