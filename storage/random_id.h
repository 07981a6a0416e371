// Random identifiers and secrets from the kernel CSPRNG (/dev/urandom via getrandom(2)).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace tessera::storage {

// `n` characters from [0-9A-Za-z], uniformly distributed (rejection sampling, no modulo bias).
absl::StatusOr<std::string> RandomBase62(int n);

}  // namespace tessera::storage
