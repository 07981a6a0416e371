// The Database seam (storage/database.h) on the engine under test: typed parameters round-trip exactly,
// error kinds map to the same canonical codes on both engines, write transactions roll back on error
// and are serializable (read-modify-write increments from several threads never lose an update), and
// ?N placeholders are rewritten for PostgreSQL outside literals only.
#include "storage/database.h"

#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "storage/postgres_database.h"
#include "tests/storage/registry_test_util.h"
#include "tests/storage/temp_dir.h"
#include "tests/storage/test_database.h"

namespace tessera::storage {
namespace {

class DatabaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TESSERA_REQUIRE_DB(tdb_);
    auto db = Database::Open(tdb_.Target(dir_.path()), Database::Options());
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = std::move(*db);
    ASSERT_OK(db_->Raw([](Conn& c) {
      return c.ExecScript(c.dialect() == Dialect::kPostgres
                              ? "CREATE TABLE t (k TEXT PRIMARY KEY, i BIGINT, r DOUBLE PRECISION, s TEXT, "
                                "m TEXT NOT NULL DEFAULT '')"
                              : "CREATE TABLE t (k TEXT PRIMARY KEY, i INTEGER, r REAL, s TEXT, m TEXT NOT NULL DEFAULT '')");
    }));
  }
  testing::TempDir dir_;
  testing::TestDb tdb_;
  std::unique_ptr<Database> db_;
};

TEST(PostgresPlaceholdersTest, RewritesOutsideLiteralsOnly) {
  EXPECT_EQ(PostgresPlaceholders("SELECT ?1, ?12 FROM t WHERE a = ?2"), "SELECT $1, $12 FROM t WHERE a = $2");
  EXPECT_EQ(PostgresPlaceholders("SELECT '?1', \"?2\", 'it''s ?3', ?4"), "SELECT '?1', \"?2\", 'it''s ?3', $4");
  EXPECT_EQ(PostgresPlaceholders("SELECT ? FROM t"), "SELECT ? FROM t");  // not a numbered placeholder
}

TEST_F(DatabaseTest, TypedParametersRoundTrip) {
  const int64_t big = std::numeric_limits<int64_t>::max() - 7;  // microsecond timestamps need 64 bits
  const double third = 1.0 / 3.0;
  const std::string text = "quote ' double \" backslash \\ ?1 $1 unicode \xc3\xa9";
  ASSERT_OK(db_->Write(false, [&](Conn& c) {
    return c.Exec("INSERT INTO t(k, i, r, s) VALUES (?1, ?2, ?3, ?4)", "a", big, third, text);
  }));
  ASSERT_OK(db_->Write(false, [&](Conn& c) {
    return c.Exec("INSERT INTO t(k, i, r, s) VALUES (?1, ?2, ?3, ?4)", "b", std::optional<int64_t>(),
                  std::optional<double>(), std::nullopt);
  }));
  ASSERT_OK(db_->Read([&](Conn& c) -> absl::Status {
    auto st = c.Prepare("SELECT i, r, s FROM t WHERE k = ?1", "a");
    if (!st.ok()) return st.status();
    EXPECT_TRUE(st->Step().value());
    EXPECT_EQ(st->Int(0), big);
    EXPECT_EQ(st->Real(1), third);  // exact: no rounding through text
    EXPECT_EQ(st->Text(2), text);
    // The same SQL again while `st` is still open: a second, independent cursor.
    auto nulls = c.Prepare("SELECT i, r, s FROM t WHERE k = ?1", "b");
    if (!nulls.ok()) return nulls.status();
    EXPECT_TRUE(nulls->Step().value());
    EXPECT_TRUE(nulls->IsNull(0));
    EXPECT_EQ(nulls->OptInt(0), std::nullopt);
    EXPECT_EQ(nulls->OptReal(1), std::nullopt);
    EXPECT_TRUE(nulls->IsNull(2));
    EXPECT_EQ(st->Text(2), text);  // the first cursor still reads its own row
    // A parameter compared with an integer literal keeps its 64 bits; bools bind as 0/1.
    auto n = c.QueryInt("SELECT COUNT(*) FROM t WHERE (?1 = 0 OR i = ?1) AND ?2 <> 0", -1, big, true);
    if (!n.ok()) return n.status();
    EXPECT_EQ(*n, 1);
    return absl::OkStatus();
  }));
}

TEST_F(DatabaseTest, ErrorsMapToTheSameCodesAndRollBack) {
  ASSERT_OK(db_->Write(false, [](Conn& c) { return c.Exec("INSERT INTO t(k, i) VALUES ('x', 1)"); }));
  // Duplicate key: ALREADY_EXISTS, and the whole transaction (the first insert too) is rolled back.
  absl::Status dup = db_->Write(false, [](Conn& c) -> absl::Status {
    if (absl::Status s = c.Exec("INSERT INTO t(k, i) VALUES ('y', 2)"); !s.ok()) return s;
    return c.Exec("INSERT INTO t(k, i) VALUES ('x', 3)");
  });
  EXPECT_CODE(dup, kAlreadyExists);
  int64_t n = -1;
  ASSERT_OK(db_->Read([&](Conn& c) -> absl::Status {
    auto q = c.QueryInt("SELECT COUNT(*) FROM t", -1);
    if (q.ok()) n = *q;
    return q.status();
  }));
  EXPECT_EQ(n, 1);
  // A syntax error is INTERNAL (not retried), a NOT NULL violation FAILED_PRECONDITION.
  EXPECT_CODE(db_->Raw([](Conn& c) { return c.Exec("SELEC 1"); }), kInternal);
  EXPECT_CODE(db_->Raw([](Conn& c) { return c.Exec("INSERT INTO t(k, m) VALUES ('z', NULL)"); }), kFailedPrecondition);
  // ABORTED from the function is retried until it succeeds; Changes() counts the last statement's rows.
  int attempts = 0;
  ASSERT_OK(db_->Write(false, [&](Conn& c) -> absl::Status {
    if (++attempts < 3) return absl::AbortedError("try again");
    if (absl::Status s = c.Exec("UPDATE t SET i = i + 1"); !s.ok()) return s;
    EXPECT_EQ(c.Changes(), 1);
    return absl::OkStatus();
  }));
  EXPECT_EQ(attempts, 3);
}

TEST_F(DatabaseTest, ConcurrentReadModifyWriteLosesNoUpdate) {
  ASSERT_OK(db_->Write(false, [](Conn& c) { return c.Exec("INSERT INTO t(k, i) VALUES ('n', 0)"); }));
  constexpr int kThreads = 4;
  constexpr int kEach = 25;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        // Read, then write the value read plus one: only serializable transactions keep every increment.
        EXPECT_OK(db_->Write(false, [](Conn& c) -> absl::Status {
          auto v = c.QueryInt("SELECT i FROM t WHERE k = 'n'", -1);
          if (!v.ok()) return v.status();
          return c.Exec("UPDATE t SET i = ?1 WHERE k = 'n'", *v + 1);
        }));
      }
    });
  }
  for (auto& t : threads) t.join();
  int64_t n = -1;
  ASSERT_OK(db_->Read([&](Conn& c) -> absl::Status {
    auto q = c.QueryInt("SELECT i FROM t WHERE k = 'n'", -1);
    if (q.ok()) n = *q;
    return q.status();
  }));
  EXPECT_EQ(n, kThreads * kEach);
}

}  // namespace
}  // namespace tessera::storage
