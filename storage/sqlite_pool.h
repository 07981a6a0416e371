// SQLite engine of the registry's Database seam (storage/database.h): connections with cached prepared
// statements, WAL, foreign keys on. Writes are BEGIN IMMEDIATE (one writer at a time, so serializable);
// reads are BEGIN .. COMMIT (one WAL snapshot). SQLITE_BUSY/LOCKED map to ABORTED, which Database retries.
#pragma once

#include <sqlite3.h>

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "storage/database.h"

namespace tessera::storage {

// Maps a SQLite result code to a Status (BUSY/LOCKED -> ABORTED, the retry marker).
absl::Status SqliteStatus(int rc, sqlite3* db, std::string_view what);

// Opens one connection to the database file at `path` (created if missing).
absl::StatusOr<std::unique_ptr<Conn>> OpenSqliteConn(const std::string& path, absl::Duration busy_timeout);

}  // namespace tessera::storage
