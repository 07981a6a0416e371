// File-system helpers shared by the blob store and backup/restore (storage-internal).
//
// ErrnoStatus maps the current errno to a canonical code (ENOENT -> NOT_FOUND, ENOSPC/EDQUOT ->
// RESOURCE_EXHAUSTED, else INTERNAL) with a message naming the operation and the path. FsyncPath opens
// `path` (a directory when `directory`) and fsyncs it: after a rename, the directory's fsync is what
// makes the new name durable.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace tessera::storage {

absl::Status ErrnoStatus(const std::string& what, const std::string& path);
absl::Status FsyncPath(const std::string& path, bool directory);

}  // namespace tessera::storage
