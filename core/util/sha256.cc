// SHA-256 per FIPS 180-4: buffering into 64-byte blocks and big-endian length padding; the compression
// function is in sha256_blocks.cc (portable, or SHA-NI where the CPU has it).
#include "core/util/sha256.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "core/util/sha256_blocks.h"

namespace tessera {
Sha256::Sha256()
    : h_{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
         0x5be0cd19} {}

void Sha256::Update(const void* data, size_t size) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  total_bytes_ += size;
  if (buf_len_ > 0) {
    const size_t take = std::min(size, sizeof(buf_) - buf_len_);
    std::memcpy(buf_ + buf_len_, p, take);
    buf_len_ += take;
    p += take;
    size -= take;
    if (buf_len_ < sizeof(buf_)) return;
    sha256_internal::Blocks(h_, buf_, 1);
    buf_len_ = 0;
  }
  if (const size_t blocks = size / 64; blocks > 0) {
    sha256_internal::Blocks(h_, p, blocks);
    p += 64 * blocks;
    size -= 64 * blocks;
  }
  std::memcpy(buf_, p, size);
  buf_len_ = size;
}

std::array<uint8_t, 32> Sha256::Finish() {
  const uint64_t bit_len = total_bytes_ * 8;
  uint8_t pad[72] = {0x80};
  const size_t pad_len = (buf_len_ < 56) ? (56 - buf_len_) : (120 - buf_len_);
  for (int i = 0; i < 8; ++i) pad[pad_len + i] = static_cast<uint8_t>(bit_len >> (56 - 8 * i));
  Update(pad, pad_len + 8);
  std::array<uint8_t, 32> out;
  for (int i = 0; i < 8; ++i) {
    out[4 * i] = static_cast<uint8_t>(h_[i] >> 24);
    out[4 * i + 1] = static_cast<uint8_t>(h_[i] >> 16);
    out[4 * i + 2] = static_cast<uint8_t>(h_[i] >> 8);
    out[4 * i + 3] = static_cast<uint8_t>(h_[i]);
  }
  return out;
}

std::string Sha256::FinishHex() {
  static constexpr char kHex[] = "0123456789abcdef";
  const std::array<uint8_t, 32> d = Finish();
  std::string s(64, '0');
  for (int i = 0; i < 32; ++i) {
    s[2 * i] = kHex[d[i] >> 4];
    s[2 * i + 1] = kHex[d[i] & 15];
  }
  return s;
}

std::string Sha256Hex(std::string_view data) {
  Sha256 h;
  h.Update(data);
  return h.FinishHex();
}

absl::StatusOr<std::string> Sha256FileHex(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  Sha256 s;
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f.get())) > 0) s.Update(buf, n);
  if (std::ferror(f.get())) return absl::DataLossError(absl::StrCat("error reading ", path));
  return s.FinishHex();
}

}  // namespace tessera
