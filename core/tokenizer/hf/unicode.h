// Unicode helpers of the Hugging Face tokenizer pipeline: UTF-8 validation and decoding, Rust's
// String::from_utf8_lossy, the White_Space property (Rust char::is_whitespace), Rust's per-char
// lowercase, and Unicode normalization forms through utf8proc.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace tessera::hf {

bool IsValidUtf8(std::string_view s);
// Decodes the code point at s[i] (s valid UTF-8) and advances i past it.
char32_t NextCodePoint(std::string_view s, size_t& i);
// Length in bytes of the UTF-8 sequence whose lead byte is `lead` (valid input).
inline size_t Utf8Length(unsigned char lead) { return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4; }
void AppendUtf8(std::string& out, char32_t cp);
// Rust's String::from_utf8_lossy: every maximal invalid subpart becomes one U+FFFD.
std::string Utf8Lossy(std::string_view bytes);
// The Unicode White_Space property (what Rust's char::is_whitespace and regex \s use).
bool IsWhitespace(char32_t cp);

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };
// Unicode normalization of valid UTF-8, as tokenizers' normalization crate does it (code points newer than
// its Unicode data are left alone).
std::string Normalize(std::string_view s, NormalForm form);
// Rust's char::to_lowercase applied to every char (full mapping: U+0130 -> "i\u0307"; no final sigma;
// Rust's newer Unicode case pairs included).
std::string Lowercase(std::string_view s);

}  // namespace tessera::hf
