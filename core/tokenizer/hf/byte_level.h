// The GPT-2 byte <-> char table of ByteLevel: printable bytes map to themselves, the others (controls,
// space, 0x7F-0xA0, 0xAD) to U+0100 and up, so every byte string is a string of visible chars.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tessera::hf {

// The UTF-8 of the char byte `b` maps to.
const std::string& ByteToChar(unsigned char b);
// The byte a char maps back to, if it is one of the 256 table chars.
std::optional<unsigned char> CharToByte(char32_t cp);
// Every byte of `bytes` mapped to its char.
void AppendByteLevel(std::string& out, std::string_view bytes);
// Inverse of AppendByteLevel for a token; false (out unchanged) if a char is not in the table.
bool DecodeByteLevel(std::string_view token, std::string& out);

}  // namespace tessera::hf
