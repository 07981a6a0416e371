// The registry's seam to its SQL engine: one small interface, two implementations -- SQLite (embedded,
// the default: storage/sqlite_pool.h) and PostgreSQL (libpq: storage/postgres_database.h).
//
// Contract:
// - SQL is written once with numbered placeholders ?1, ?2, ... (SQLite's syntax); the PostgreSQL
//   connection rewrites them to $1, $2, ... and binds typed parameters (int64 -> int8, double ->
//   float8, text -> text, NULL -> inferred). Bind bools as integers (0/1) and test them with `<> 0`.
//   Where the dialects differ (identity columns, system catalogs, triggers), the caller branches on
//   Conn::dialect(); the schema itself is written per dialect (storage/migrations.cc).
// - Errors map to canonical codes: unique/primary-key violation -> ALREADY_EXISTS, other constraint or
//   trigger refusals -> FAILED_PRECONDITION, "retry the whole transaction" (SQLITE_BUSY/LOCKED,
//   PostgreSQL serialization failure 40001 / deadlock 40P01) -> ABORTED, lost server -> UNAVAILABLE.
// - Transactions (Database::Write / Read / Raw) retry ABORTED with jittered backoff until the busy
//   deadline, then return UNAVAILABLE. So `fn` may run several times: it must only produce effects
//   through the connection (or be idempotent, like a blob existence check) and (re)assign its outputs.
//   Write is serializable on both engines: SQLite has one writer at a time (BEGIN IMMEDIATE);
//   PostgreSQL runs ISOLATION LEVEL SERIALIZABLE, so every write transaction behaves as if the writes
//   ran one after another, and a conflicting one is retried. Read sees one consistent snapshot.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"


namespace tessera::storage {

enum class Dialect { kSqlite, kPostgres };

// A bound parameter. Text is a view: Conn::Prepare's arguments outlive PrepareValues, and each engine
// copies what it keeps (SQLite binds with SQLITE_TRANSIENT; libpq runs the statement before returning).
using SqlValue = std::variant<std::monostate, int64_t, double, std::string_view>;

// The rows of one executed statement (a cursor). Column accessors read the current row.
class Rows {
 public:
  virtual ~Rows() = default;
  // true: a row is available; false: done.
  virtual absl::StatusOr<bool> Step() = 0;
  virtual int64_t Int(int col) const = 0;
  virtual double Real(int col) const = 0;
  virtual bool IsNull(int col) const = 0;
  virtual std::string Text(int col) const = 0;
};

// A statement in use (owns its cursor).
class Stmt {
 public:
  explicit Stmt(std::unique_ptr<Rows> rows) : rows_(std::move(rows)) {}
  absl::StatusOr<bool> Step() { return rows_->Step(); }
  // Steps to completion (for statements without results).
  absl::Status Run();
  int64_t Int(int col) const { return rows_->Int(col); }
  double Real(int col) const { return rows_->Real(col); }
  bool IsNull(int col) const { return rows_->IsNull(col); }
  std::string Text(int col) const { return rows_->Text(col); }
  std::optional<double> OptReal(int col) const {
    return IsNull(col) ? std::nullopt : std::optional<double>(Real(col));
  }
  std::optional<int64_t> OptInt(int col) const {
    return IsNull(col) ? std::nullopt : std::optional<int64_t>(Int(col));
  }

 private:
  std::unique_ptr<Rows> rows_;
};

// One connection, used by one thread at a time (leased from its Database).
class Conn {
 public:
  virtual ~Conn() = default;
  virtual Dialect dialect() const = 0;

  // Prepares `sql`, binds `args` to ?1, ?2, ... and (PostgreSQL) executes it.
  template <typename... Args>
  absl::StatusOr<Stmt> Prepare(std::string_view sql, const Args&... args) {
    std::vector<SqlValue> values;
    values.reserve(sizeof...(Args));
    (values.push_back(ToValue(args)), ...);
    return PrepareValues(sql, values);
  }
  // Runs a statement without results.
  template <typename... Args>
  absl::Status Exec(std::string_view sql, const Args&... args) {
    absl::StatusOr<Stmt> st = Prepare(sql, args...);
    if (!st.ok()) return st.status();
    return st->Run();
  }
  // First column of the first row as int64 (`dflt` if no row or NULL).
  template <typename... Args>
  absl::StatusOr<int64_t> QueryInt(std::string_view sql, int64_t dflt, const Args&... args) {
    absl::StatusOr<Stmt> st = Prepare(sql, args...);
    if (!st.ok()) return st.status();
    absl::StatusOr<bool> row = st->Step();
    if (!row.ok()) return row.status();
    if (!*row || st->IsNull(0)) return dflt;
    return st->Int(0);
  }
  // Runs several ';'-separated statements without parameters (migrations).
  virtual absl::Status ExecScript(const std::string& sql) = 0;
  // Rows changed by the last INSERT/UPDATE/DELETE.
  virtual int64_t Changes() const = 0;

  virtual absl::StatusOr<Stmt> PrepareValues(std::string_view sql, const std::vector<SqlValue>& args) = 0;

  // One attempt of a transaction (Database retries ABORTED). full_sync: durable commit (SQLite
  // synchronous=FULL; PostgreSQL commits are always durable with synchronous_commit=on).
  virtual absl::Status AttemptWrite(bool full_sync, const std::function<absl::Status(Conn&)>& fn) = 0;
  virtual absl::Status AttemptRead(const std::function<absl::Status(Conn&)>& fn) = 0;
  // false once the connection is unusable (the pool then drops it instead of reusing it).
  virtual bool Healthy() const { return true; }

 private:
  static SqlValue ToValue(int64_t v) { return v; }
  static SqlValue ToValue(int v) { return static_cast<int64_t>(v); }
  static SqlValue ToValue(bool v) { return static_cast<int64_t>(v ? 1 : 0); }
  static SqlValue ToValue(double v) { return v; }
  static SqlValue ToValue(std::string_view v) { return v; }
  static SqlValue ToValue(const std::string& v) { return std::string_view(v); }
  static SqlValue ToValue(const char* v) { return std::string_view(v); }
  static SqlValue ToValue(std::nullopt_t) { return std::monostate(); }
  template <typename T>
  static SqlValue ToValue(const std::optional<T>& v) {
    return v.has_value() ? ToValue(*v) : SqlValue(std::monostate());
  }
};

// A pool of connections to one database plus the retrying transaction runners.
class Database {
 public:
  struct Options {
    // How long one statement waits on a lock before our retry loop takes over (SQLite busy timeout,
    // PostgreSQL lock_timeout).
    absl::Duration busy_timeout = absl::Milliseconds(200);
    // Total time a transaction keeps retrying ABORTED before giving up with UNAVAILABLE.
    absl::Duration busy_deadline = absl::Seconds(60);
  };
  using Connector = std::function<absl::StatusOr<std::unique_ptr<Conn>>()>;

  // `target`: "postgres://..." / "postgresql://..." (a libpq URI) or a SQLite database file path.
  static absl::StatusOr<std::unique_ptr<Database>> Open(const std::string& target, const Options& options);
  static bool IsPostgresUrl(std::string_view target);

  Dialect dialect() const { return dialect_; }
  // fn inside a serializable write transaction, retried on ABORTED.
  absl::Status Write(bool full_sync, const std::function<absl::Status(Conn&)>& fn);
  // fn inside a read transaction (one consistent snapshot), retried on ABORTED.
  absl::Status Read(const std::function<absl::Status(Conn&)>& fn);
  // fn on a connection outside any transaction (each statement its own), retried on ABORTED.
  absl::Status Raw(const std::function<absl::Status(Conn&)>& fn);

 private:
  struct Returner {
    Database* db;
    void operator()(Conn* c) const;
  };
  using Lease = std::unique_ptr<Conn, Returner>;
  Database(Dialect dialect, Connector connect, absl::Duration busy_deadline)
      : dialect_(dialect), connect_(std::move(connect)), busy_deadline_(busy_deadline) {}
  absl::StatusOr<Lease> Acquire();
  absl::Status Retry(const std::function<absl::Status(Conn&)>& attempt);

  Dialect dialect_;
  Connector connect_;
  absl::Duration busy_deadline_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Conn>> idle_;
};

}  // namespace tessera::storage
