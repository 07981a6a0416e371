// Numbered schema migrations of the registry database. Migration N is applied exactly once, inside one
// write transaction together with its row in `schema_migrations`, so concurrent openers (threads or
// processes) serialize on the write lock and a crash mid-migration leaves the previous schema intact.
// Never edit a published migration: append a new one.
#pragma once

#include "absl/status/status.h"
#include "storage/sqlite_pool.h"

namespace tessera::storage {

int LatestMigration();
// Applies migrations up to `target` (-1 = latest). Never downgrades: a database newer than this binary
// is FAILED_PRECONDITION.
absl::Status Migrate(SqlitePool& pool, int target);

}  // namespace tessera::storage
