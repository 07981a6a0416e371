// Debian's Abseil is built with its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW 0), so
// absl::StrCat does not accept std::string_view; Sv() bridges the two without copying.
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace tessera::storage {

inline absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace tessera::storage
