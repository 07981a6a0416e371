// UTF-8 helpers for streaming decoded bytes: a token boundary may fall inside a multi-byte character,
// and a streamed chunk should not end with half a character.
#pragma once

#include <cstddef>
#include <string_view>

namespace tessera {

// Length of the longest prefix of `bytes` that does not end inside an incomplete UTF-8 sequence.
// Only a truncated *final* sequence is held back (at most 3 bytes); invalid bytes elsewhere are passed
// through unchanged, so a stream of arbitrary bytes is never stalled for more than 3 bytes.
size_t Utf8CompletePrefixLength(std::string_view bytes);

}  // namespace tessera
