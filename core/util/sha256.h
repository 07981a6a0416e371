// SHA-256 (FIPS 180-4), self-contained so no crypto library is needed. One implementation for the whole
// tree: storage/ uses it for blob digests and API-key hashes, core/ for the backbone digest recorded in
// every trained artifact. Verified against the FIPS/NIST vectors in tests/core/util/sha256_test.cc.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace tessera {

class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t size);
  void Update(std::string_view data) { Update(data.data(), data.size()); }
  std::array<uint8_t, 32> Finish();  // the object must not be used after Finish
  std::string FinishHex();           // lowercase hex, 64 characters

 private:
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_bytes_ = 0;
};

// One-shot helper: lowercase hex sha256 of `data`.
std::string Sha256Hex(std::string_view data);

// Streaming sha256 of a file: NOT_FOUND if it cannot be opened, DATA_LOSS on a read error.
absl::StatusOr<std::string> Sha256FileHex(const std::string& path);

}  // namespace tessera
