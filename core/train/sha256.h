// SHA-256 (FIPS 180-4) for identifying backbones (the "backbone sha256" recorded in every trained
// artifact). core/ may not depend on storage/, which has its own copy for blob digests.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace tessera::train {

std::string Sha256Hex(std::string_view data);              // lowercase hex
absl::StatusOr<std::string> Sha256FileHex(const std::string& path);

}  // namespace tessera::train
