#include "storage/random_id.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tessera::storage {
namespace {

absl::Status FillRandom(uint8_t* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = getrandom(buf + got, n - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat("getrandom: ", std::strerror(errno)));
    }
    got += static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> RandomBase62(int n) {
  static constexpr char kAlphabet[] =
      "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  std::string out;
  out.reserve(n);
  uint8_t buf[64];
  while (static_cast<int>(out.size()) < n) {
    if (absl::Status s = FillRandom(buf, sizeof(buf)); !s.ok()) return s;
    for (uint8_t b : buf) {
      // 248 = 4 * 62: bytes >= 248 are rejected so every character is equally likely.
      if (b < 248 && static_cast<int>(out.size()) < n) out.push_back(kAlphabet[b % 62]);
    }
  }
  return out;
}

}  // namespace tessera::storage
