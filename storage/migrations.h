// Numbered schema migrations of the registry database, the same numbers on SQLite and PostgreSQL (each
// migration is written once per engine). Migration N is applied exactly once, inside one write
// transaction together with its row in `schema_migrations`, so concurrent openers (threads or processes)
// serialize (SQLite's write lock; a PostgreSQL advisory lock) and a crash mid-migration leaves the
// previous schema intact (DDL is transactional on both).
// Never edit a published migration: append a new one.
#pragma once

#include "absl/status/status.h"
#include "storage/database.h"

namespace tessera::storage {

int LatestMigration();
// The migration that adds tenant_quotas (per-tenant quota overrides, storage/quotas.h).
inline constexpr int kQuotaMigration = 12;
// Applies migrations up to `target` (-1 = latest). Never downgrades: a database newer than this binary
// is FAILED_PRECONDITION.
absl::Status Migrate(Database& db, int target);

}  // namespace tessera::storage
