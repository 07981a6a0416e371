// Whole-file helpers with crash-safe writes.
//
// WriteFileAtomically writes to a temporary file in the destination's directory, fsyncs it, renames
// it over `path` and fsyncs the directory, so after a crash `path` holds either its old content or
// the new one, never a partial file. The temporary file is removed on failure.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera::io {

// NOT_FOUND if `path` does not exist; other I/O failures name the path and errno text.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

absl::Status WriteFileAtomically(const std::string& path, std::string_view bytes);

}  // namespace tessera::io
