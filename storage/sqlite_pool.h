// Internal SQLite plumbing for the registry: a pool of connections (one user at a time each), cached
// prepared statements, and transaction runners that retry on SQLITE_BUSY so it never reaches a caller.
//
// Contract of the runners: `fn` may be run several times (each attempt starts from a fresh
// transaction), so it must only produce effects through the connection and must (re)assign its outputs.
// Inside `fn`, a Status with code ABORTED means "SQLITE_BUSY/LOCKED: retry"; no other code is retried.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tessera::storage {

// Maps a SQLite result code to a Status (BUSY/LOCKED -> ABORTED, the retry marker).
absl::Status SqliteStatus(int rc, sqlite3* db, std::string_view what);

// A cached prepared statement in use; resets itself (and clears bindings) when destroyed.
class Stmt {
 public:
  Stmt(sqlite3_stmt* stmt, sqlite3* db) : stmt_(stmt), db_(db) {}
  Stmt(Stmt&& other) noexcept : stmt_(other.stmt_), db_(other.db_) { other.stmt_ = nullptr; }
  Stmt& operator=(Stmt&&) = delete;
  Stmt(const Stmt&) = delete;
  ~Stmt();

  void Bind(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  void Bind(int i, int v) { sqlite3_bind_int64(stmt_, i, v); }
  void Bind(int i, bool v) { sqlite3_bind_int64(stmt_, i, v ? 1 : 0); }
  void Bind(int i, double v) { sqlite3_bind_double(stmt_, i, v); }
  void Bind(int i, std::string_view v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  void Bind(int i, const std::string& v) { Bind(i, std::string_view(v)); }
  void Bind(int i, const char* v) { Bind(i, std::string_view(v)); }
  void Bind(int i, std::nullopt_t) { sqlite3_bind_null(stmt_, i); }
  template <typename T>
  void Bind(int i, const std::optional<T>& v) {
    if (v.has_value()) {
      Bind(i, *v);
    } else {
      sqlite3_bind_null(stmt_, i);
    }
  }

  // true: a row is available; false: done.
  absl::StatusOr<bool> Step();
  // Steps to completion (for statements without results).
  absl::Status Run();

  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  double Real(int col) const { return sqlite3_column_double(stmt_, col); }
  bool IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  std::string Text(int col) const;
  std::optional<double> OptReal(int col) const {
    return IsNull(col) ? std::nullopt : std::optional<double>(Real(col));
  }
  std::optional<int64_t> OptInt(int col) const {
    return IsNull(col) ? std::nullopt : std::optional<int64_t>(Int(col));
  }

 private:
  sqlite3_stmt* stmt_;
  sqlite3* db_;
};

class Conn {
 public:
  ~Conn();
  static absl::StatusOr<std::unique_ptr<Conn>> Open(const std::string& path, absl::Duration busy);

  // Prepares (or reuses) `sql` and binds `args` to ?1, ?2, ...
  template <typename... Args>
  absl::StatusOr<Stmt> Prepare(std::string_view sql, const Args&... args) {
    absl::StatusOr<sqlite3_stmt*> s = Cached(sql);
    if (!s.ok()) return s.status();
    Stmt st(*s, db_);
    int i = 0;
    (st.Bind(++i, args), ...);
    return st;
  }
  // Runs a statement without results.
  template <typename... Args>
  absl::Status Exec(std::string_view sql, const Args&... args) {
    absl::StatusOr<Stmt> st = Prepare(sql, args...);
    if (!st.ok()) return st.status();
    return st->Run();
  }
  // Runs several ';'-separated statements (uncached; for migrations).
  absl::Status ExecScript(const std::string& sql);
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
  int64_t Changes() const { return sqlite3_changes64(db_); }
  sqlite3* raw() { return db_; }

 private:
  explicit Conn(sqlite3* db) : db_(db) {}
  absl::StatusOr<sqlite3_stmt*> Cached(std::string_view sql);
  sqlite3* db_;
  std::unordered_map<std::string, sqlite3_stmt*> cache_;
};

class SqlitePool {
 public:
  static absl::StatusOr<std::unique_ptr<SqlitePool>> Open(const std::string& path,
                                                          absl::Duration busy_timeout,
                                                          absl::Duration busy_deadline);

  // Runs fn inside BEGIN IMMEDIATE .. COMMIT, retrying on BUSY. full_sync: commit with synchronous=FULL.
  absl::Status Write(bool full_sync, const std::function<absl::Status(Conn&)>& fn);
  // Runs fn inside a read transaction (one consistent snapshot), retrying on BUSY.
  absl::Status Read(const std::function<absl::Status(Conn&)>& fn);
  // Runs fn on a connection outside any transaction, retrying on BUSY (fn manages its own).
  absl::Status Raw(const std::function<absl::Status(Conn&)>& fn);

 private:
  struct Returner {
    SqlitePool* pool;
    void operator()(Conn* c) const;
  };
  using Lease = std::unique_ptr<Conn, Returner>;
  SqlitePool(std::string path, absl::Duration busy_timeout, absl::Duration busy_deadline)
      : path_(std::move(path)), busy_timeout_(busy_timeout), busy_deadline_(busy_deadline) {}
  absl::StatusOr<Lease> Acquire();
  absl::Status Retry(const std::function<absl::Status(Conn&)>& attempt);

  std::string path_;
  absl::Duration busy_timeout_;
  absl::Duration busy_deadline_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Conn>> idle_;
};

}  // namespace tessera::storage
