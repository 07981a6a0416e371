// Utf8Sanitize: bytes as valid UTF-8, for text that leaves the service (proto3 strings and JSON must be
// UTF-8, while a model may emit any bytes).
#pragma once

#include <string>
#include <string_view>

namespace tessera {

// Each byte that does not start or continue a valid sequence (truncated sequences, overlong forms,
// surrogates, values past U+10FFFF) becomes U+FFFD; valid text passes through unchanged.
std::string Utf8Sanitize(std::string_view bytes);

}  // namespace tessera
