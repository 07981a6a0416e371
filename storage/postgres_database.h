// PostgreSQL engine of the registry's Database seam (storage/database.h), on libpq.
//
// - SQL arrives with SQLite-style ?N placeholders; they are rewritten to $N outside string literals and
//   quoted identifiers (the rewrite is cached per connection) and sent with PQexecParams, parameters
//   typed int8 / float8 / text (NULL: inferred by the server), results in text format.
// - Write = BEGIN ISOLATION LEVEL SERIALIZABLE .. COMMIT: PostgreSQL's serializable snapshot isolation
//   aborts any transaction that could break serializability with SQLSTATE 40001, and a deadlock with
//   40P01; both map to ABORTED, which Database retries from the start. So every registry write keeps
//   the invariants it has on SQLite's single writer, across any number of processes and hosts.
// - Read = BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY (one snapshot).
// - A lost connection is UNAVAILABLE (never retried: a COMMIT in flight may or may not have happened)
//   and the connection is dropped from the pool; the next call connects afresh.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "storage/database.h"

namespace tessera::storage {

// Connects to `url` (a libpq URI: postgres://USER@HOST:PORT/DB[?options]). `lock_timeout`: how long one
// statement waits for a lock another transaction holds (then 55P03 -> ABORTED -> retried until the busy
// deadline, as SQLITE_BUSY is), so a stuck lock holder yields UNAVAILABLE rather than a hang.
absl::StatusOr<std::unique_ptr<Conn>> OpenPostgresConn(const std::string& url, absl::Duration lock_timeout);

// SQLite-style ?N placeholders -> $N, leaving '...' literals and "..." identifiers alone.
std::string PostgresPlaceholders(std::string_view sql);

}  // namespace tessera::storage
