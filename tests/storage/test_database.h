// Which database engine the registry tests run on, and a real PostgreSQL server for them.
//
// TESSERA_TEST_REGISTRY=postgres runs a test binary against PostgreSQL (ctest registers each registry
// test binary twice: <name> on SQLite and <name>_postgres); otherwise SQLite in the test's temp dir.
// On PostgreSQL, the first test that needs it starts ONE server for the whole binary (initdb + pg_ctl
// in a temp dir on a free loopback port, as the unprivileged user `nobody` when running as root, since
// initdb refuses root; fsync off: it is thrown away), and every TestDb gets a fresh database in it. The
// server is stopped and its directory removed when the binary exits. Where the PostgreSQL binaries are
// missing, tests skip with a message saying so (set TESSERA_PG_BINDIR to point at them).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "storage/registry.h"

namespace tessera::storage::testing {

// true when TESSERA_TEST_REGISTRY=postgres.
bool UsePostgres();

// One fresh registry database for a test.
class TestDb {
 public:
  TestDb();
  // Non-empty when the test must skip (PostgreSQL requested, binaries missing); a failure to start a
  // server that exists is an error, not a skip (see error()).
  const std::string& skip_reason() const { return skip_reason_; }
  const absl::Status& error() const { return error_; }
  // `base` with Options::database naming this database ("" = SQLite in the data dir).
  Registry::Options Options(Registry::Options base = Registry::Options()) const {
    base.database = url_;
    return base;
  }
  // What Database::Open takes for it: data_dir/registry.db on SQLite, the URL on PostgreSQL.
  std::string Target(const std::string& data_dir) const {
    return url_.empty() ? data_dir + "/registry.db" : url_;
  }
  const std::string& url() const { return url_; }

 private:
  std::string url_;
  std::string skip_reason_;
  absl::Status error_;
};

// Runs `sql` (several ';'-separated statements, no parameters) directly on a registry database, outside
// the Registry: `target` is TestDb::Target(). SQLite connections have foreign keys on, like the registry's.
absl::Status RawExec(const std::string& target, const std::string& sql);

}  // namespace tessera::storage::testing

// In a test body: skip (with the reason) or fail when the TestDb cannot be used.
#define TESSERA_REQUIRE_DB(db)                                          \
  do {                                                                  \
    if (!(db).skip_reason().empty()) GTEST_SKIP() << (db).skip_reason(); \
    ASSERT_TRUE((db).error().ok()) << (db).error();                     \
  } while (0)

// In a test body: the test exercises SQLite itself (file locks, PRAGMAs) and has no PostgreSQL meaning.
#define TESSERA_SQLITE_ONLY(why)                                                         \
  do {                                                                                   \
    if (::tessera::storage::testing::UsePostgres()) GTEST_SKIP() << "SQLite-only: " << why; \
  } while (0)
