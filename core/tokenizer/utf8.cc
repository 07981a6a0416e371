#include "core/tokenizer/utf8.h"

namespace tessera {

size_t Utf8CompletePrefixLength(std::string_view bytes) {
  const size_t n = bytes.size();
  // Walk back over at most 3 continuation bytes to the last lead byte.
  size_t i = n;
  int continuation = 0;
  while (i > 0 && continuation < 4) {
    const unsigned char c = static_cast<unsigned char>(bytes[i - 1]);
    if ((c & 0xC0) != 0x80) break;
    --i;
    ++continuation;
  }
  if (i == 0) return n;  // only continuation bytes (or empty): nothing to wait for
  const unsigned char lead = static_cast<unsigned char>(bytes[i - 1]);
  int need;
  if (lead < 0x80) need = 0;
  else if ((lead & 0xE0) == 0xC0) need = 1;
  else if ((lead & 0xF0) == 0xE0) need = 2;
  else if ((lead & 0xF8) == 0xF0) need = 3;
  else return n;  // invalid lead byte: pass through
  if (continuation >= need) return n;
  return i - 1;  // hold back the incomplete sequence
}

}  // namespace tessera
