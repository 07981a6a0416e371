#include "core/sampling/stop_matcher.h"

#include <algorithm>

namespace tessera {

StopMatcher::StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (const std::string& s : stops_) max_len_ = std::max(max_len_, s.size());
}

bool StopMatcher::Feed(std::string_view piece) {
  if (stopped() || piece.empty()) return stopped();
  const size_t old_size = text_.size();
  text_.append(piece);
  // A new occurrence must end inside the new bytes, so it starts at most (len - 1) bytes earlier.
  size_t best_pos = std::string::npos;
  size_t best_len = 0;
  int best = -1;
  for (size_t i = 0; i < stops_.size(); ++i) {
    const std::string& s = stops_[i];
    if (s.empty()) continue;
    const size_t from = old_size >= s.size() - 1 ? old_size - (s.size() - 1) : 0;
    const size_t pos = text_.find(s, from);
    if (pos == std::string::npos) continue;
    if (pos < best_pos || (pos == best_pos && s.size() > best_len)) {
      best_pos = pos;
      best_len = s.size();
      best = static_cast<int>(i);
    }
  }
  if (best >= 0) {
    matched_ = best;
    stop_pos_ = best_pos;
    text_.resize(best_pos + best_len);
  }
  return stopped();
}

size_t StopMatcher::safe_bytes() const {
  if (stopped()) return stop_pos_;
  // Hold back the longest tail of text_ that is a proper prefix of some stop string.
  size_t hold = 0;
  const size_t n = text_.size();
  for (const std::string& s : stops_) {
    const size_t limit = std::min(n, s.empty() ? size_t{0} : s.size() - 1);
    for (size_t len = limit; len > hold; --len) {
      if (text_.compare(n - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  return n - hold;
}

}  // namespace tessera
