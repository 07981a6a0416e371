// StopMatcher: finds stop strings in generated text as it is decoded, token by token.
//
// The generator feeds each token's decoded bytes; a stop string may span several tokens (and even
// split a UTF-8 character), so matching runs over the accumulated byte stream, not per piece. Once a
// stop string appears, the output is cut right before its earliest occurrence (the stop string itself
// is not part of the output) and later feeds are ignored. For streaming, safe_bytes() says how much of
// the text can be emitted now: everything except a tail that might still grow into a stop string.
// Cost: each Feed scans only the new bytes plus (longest stop - 1) bytes before them.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

class StopMatcher {
 public:
  // Empty stop strings are ignored.
  explicit StopMatcher(std::vector<std::string> stops);

  // Appends decoded bytes; returns stopped(). No-op once stopped.
  bool Feed(std::string_view piece);

  bool stopped() const { return matched_ >= 0; }
  // Index into the constructor's list of the stop string that matched (-1 if none yet). When several
  // occur, the one starting earliest wins; at the same start, the longer one.
  int matched_stop() const { return matched_; }
  // Bytes of text() that form the output: before the stop string if stopped, else all of it.
  size_t keep_bytes() const { return stopped() ? stop_pos_ : text_.size(); }
  // Bytes that can be emitted now without risk of emitting part of a stop string (== keep_bytes()
  // once stopped).
  size_t safe_bytes() const;

  const std::string& text() const { return text_; }  // everything fed (until the stop)
  std::string_view output() const { return std::string_view(text_).substr(0, keep_bytes()); }

 private:
  std::vector<std::string> stops_;  // as given (empty ones never match)
  size_t max_len_ = 0;
  std::string text_;
  int matched_ = -1;
  size_t stop_pos_ = 0;
};

}  // namespace tessera
