#include "core/tokenizer/hf/byte_level.h"

#include <array>

#include "core/tokenizer/hf/unicode.h"

namespace tessera::hf {

namespace {

struct Table {
  std::array<std::string, 256> to_char;
  std::array<int, 324> to_byte;  // chars are < U+0144
  Table() {
    to_byte.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      AppendUtf8(to_char[b], cp);
      to_byte[cp] = b;
    }
  }
};

const Table& T() {
  static const Table table;
  return table;
}

}  // namespace

const std::string& ByteToChar(unsigned char b) { return T().to_char[b]; }

std::optional<unsigned char> CharToByte(char32_t cp) {
  if (cp >= T().to_byte.size() || T().to_byte[cp] < 0) return std::nullopt;
  return static_cast<unsigned char>(T().to_byte[cp]);
}

void AppendByteLevel(std::string& out, std::string_view bytes) {
  const Table& t = T();
  for (char c : bytes) out.append(t.to_char[static_cast<unsigned char>(c)]);
}

bool DecodeByteLevel(std::string_view token, std::string& out) {
  const size_t mark = out.size();
  size_t i = 0;
  while (i < token.size()) {
    auto b = CharToByte(NextCodePoint(token, i));
    if (!b.has_value()) {
      out.resize(mark);
      return false;
    }
    out.push_back(static_cast<char>(*b));
  }
  return true;
}

}  // namespace tessera::hf
