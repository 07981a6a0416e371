// SQLite connections with cached prepared statements (see sqlite_pool.h).
#include "storage/sqlite_pool.h"

#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "storage/sv.h"

namespace tessera::storage {

absl::Status SqliteStatus(int rc, sqlite3* db, std::string_view what) {
  const int primary = rc & 0xff;
  const std::string msg =
      absl::StrCat(Sv(what), ": ", db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc), " (", rc, ")");
  switch (primary) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::AbortedError(absl::StrCat("SQLITE_BUSY ", msg));
    case SQLITE_CONSTRAINT:
      if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return absl::AlreadyExistsError(msg);
      }
      return absl::FailedPreconditionError(msg);
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(msg);
    default:
      return absl::InternalError(msg);
  }
}

namespace {

// A prepared statement in use. A cached one is reset (bindings cleared) and marked free when this is
// destroyed; an uncached one (its SQL was already in use on this connection) is finalized.
class SqliteRows final : public Rows {
 public:
  SqliteRows(sqlite3_stmt* stmt, sqlite3* db, bool* in_use) : stmt_(stmt), db_(db), in_use_(in_use) {}
  ~SqliteRows() override {
    if (in_use_ == nullptr) {
      sqlite3_finalize(stmt_);
      return;
    }
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    *in_use_ = false;
  }
  absl::StatusOr<bool> Step() override {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqliteStatus(sqlite3_extended_errcode(db_), db_, sqlite3_sql(stmt_));
  }
  int64_t Int(int col) const override { return sqlite3_column_int64(stmt_, col); }
  double Real(int col) const override { return sqlite3_column_double(stmt_, col); }
  bool IsNull(int col) const override { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  std::string Text(int col) const override {
    const unsigned char* p = sqlite3_column_text(stmt_, col);
    if (p == nullptr) return "";
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
  }

 private:
  sqlite3_stmt* stmt_;
  sqlite3* db_;
  bool* in_use_;
};

class SqliteConn final : public Conn {
 public:
  explicit SqliteConn(sqlite3* db) : db_(db) {}
  ~SqliteConn() override {
    for (auto& [sql, e] : cache_) sqlite3_finalize(e.stmt);
    sqlite3_close_v2(db_);
  }
  Dialect dialect() const override { return Dialect::kSqlite; }
  int64_t Changes() const override { return sqlite3_changes64(db_); }

  absl::StatusOr<Stmt> PrepareValues(std::string_view sql, const std::vector<SqlValue>& args) override {
    sqlite3_stmt* st = nullptr;
    bool* in_use = nullptr;
    auto it = cache_.find(std::string(sql));
    if (it != cache_.end() && !it->second.in_use) {
      st = it->second.stmt;
      in_use = &it->second.in_use;
    } else {
      const int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                        it == cache_.end() ? SQLITE_PREPARE_PERSISTENT : 0, &st, nullptr);
      if (rc != SQLITE_OK) return SqliteStatus(rc, db_, absl::StrCat("prepare ", Sv(sql)));
      if (it == cache_.end()) in_use = &cache_.emplace(std::string(sql), Cached{st, false}).first->second.in_use;
    }
    if (in_use != nullptr) *in_use = true;
    Stmt out(std::make_unique<SqliteRows>(st, db_, in_use));
    for (size_t i = 0; i < args.size(); ++i) {
      const int n = static_cast<int>(i) + 1;
      const SqlValue& v = args[i];
      if (const int64_t* x = std::get_if<int64_t>(&v)) {
        sqlite3_bind_int64(st, n, *x);
      } else if (const double* d = std::get_if<double>(&v)) {
        sqlite3_bind_double(st, n, *d);
      } else if (const std::string_view* s = std::get_if<std::string_view>(&v)) {
        sqlite3_bind_text(st, n, s->data(), static_cast<int>(s->size()), SQLITE_TRANSIENT);
      } else {
        sqlite3_bind_null(st, n);
      }
    }
    return out;
  }

  absl::Status ExecScript(const std::string& sql) override {
    char* err = nullptr;
    const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    if (rc == SQLITE_OK) return absl::OkStatus();
    absl::Status s = SqliteStatus(sqlite3_extended_errcode(db_), nullptr, "");
    const std::string msg = absl::StrCat(sql.substr(0, 60), ": ", err != nullptr ? err : "");
    sqlite3_free(err);
    return absl::Status(s.code(), absl::IsAborted(s) ? absl::StrCat("SQLITE_BUSY ", msg) : msg);
  }

  absl::Status AttemptWrite(bool full_sync, const std::function<absl::Status(Conn&)>& fn) override {
    if (full_sync) {
      if (absl::Status s = Exec("PRAGMA synchronous=FULL"); !s.ok()) return s;
    }
    absl::Status s = Exec("BEGIN IMMEDIATE");
    if (s.ok()) {
      s = fn(*this);
      if (s.ok()) s = Exec("COMMIT");
      if (!s.ok() && !sqlite3_get_autocommit(db_)) {
        // ROLLBACK of an open transaction does not fail with BUSY; ignore its status.
        (void)Exec("ROLLBACK");
      }
    }
    if (full_sync) {
      // Never let this turn a committed transaction into a retry (which would apply it twice); if it
      // failed, the connection merely stays at FULL, which is slower but just as correct.
      (void)Exec("PRAGMA synchronous=NORMAL");
    }
    return s;
  }

  absl::Status AttemptRead(const std::function<absl::Status(Conn&)>& fn) override {
    absl::Status s = Exec("BEGIN");
    if (!s.ok()) return s;
    s = fn(*this);
    if (s.ok()) s = Exec("COMMIT");
    if (!sqlite3_get_autocommit(db_)) (void)Exec("ROLLBACK");
    return s;
  }

 private:
  struct Cached {
    sqlite3_stmt* stmt;
    bool in_use;
  };
  sqlite3* db_;
  // unordered_map never moves its values, so the in_use flags handed out stay valid.
  std::unordered_map<std::string, Cached> cache_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Conn>> OpenSqliteConn(const std::string& path, absl::Duration busy_timeout) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status s = SqliteStatus(rc, db, absl::StrCat("open ", path));
    sqlite3_close_v2(db);
    return s;
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, static_cast<int>(absl::ToInt64Milliseconds(busy_timeout)));
  std::unique_ptr<Conn> c = std::make_unique<SqliteConn>(db);
  // journal_mode=WAL is persistent in the file; setting it again is cheap once it is WAL.
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON", "PRAGMA synchronous=NORMAL"}) {
    if (absl::Status s = c->ExecScript(pragma); !s.ok()) return s;
  }
  return c;
}

}  // namespace tessera::storage
