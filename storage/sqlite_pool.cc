// SQLite connection pool and retrying transaction runners (see sqlite_pool.h).
#include "storage/sqlite_pool.h"

#include <chrono>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "storage/sv.h"

namespace tessera::storage {
namespace {

constexpr size_t kMaxIdle = 64;  // enough for a gRPC thread pool; extra ones are closed on release

bool IsBusy(const absl::Status& s) { return absl::IsAborted(s); }

}  // namespace

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

Stmt::~Stmt() {
  if (stmt_ != nullptr) {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
}

absl::StatusOr<bool> Stmt::Step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqliteStatus(sqlite3_extended_errcode(db_), db_, sqlite3_sql(stmt_));
}

absl::Status Stmt::Run() {
  while (true) {
    absl::StatusOr<bool> row = Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
  }
}

std::string Stmt::Text(int col) const {
  const unsigned char* p = sqlite3_column_text(stmt_, col);
  if (p == nullptr) return "";
  return std::string(reinterpret_cast<const char*>(p),
                     static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
}

Conn::~Conn() {
  for (auto& [sql, st] : cache_) sqlite3_finalize(st);
  sqlite3_close_v2(db_);
}

absl::StatusOr<std::unique_ptr<Conn>> Conn::Open(const std::string& path, absl::Duration busy) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  if (rc != SQLITE_OK) {
    absl::Status s = SqliteStatus(rc, db, absl::StrCat("open ", path));
    sqlite3_close_v2(db);
    return s;
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, static_cast<int>(absl::ToInt64Milliseconds(busy)));
  std::unique_ptr<Conn> c(new Conn(db));
  // journal_mode=WAL is persistent in the file; setting it again is cheap once it is WAL.
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON",
                             "PRAGMA synchronous=NORMAL"}) {
    if (absl::Status s = c->ExecScript(pragma); !s.ok()) return s;
  }
  return c;
}

absl::StatusOr<sqlite3_stmt*> Conn::Cached(std::string_view sql) {
  auto it = cache_.find(std::string(sql));
  if (it != cache_.end()) return it->second;
  sqlite3_stmt* st = nullptr;
  const int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                    SQLITE_PREPARE_PERSISTENT, &st, nullptr);
  if (rc != SQLITE_OK) return SqliteStatus(rc, db_, absl::StrCat("prepare ", Sv(sql)));
  cache_.emplace(std::string(sql), st);
  return st;
}

absl::Status Conn::ExecScript(const std::string& sql) {
  char* err = nullptr;
  const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
  if (rc == SQLITE_OK) return absl::OkStatus();
  absl::Status s = SqliteStatus(sqlite3_extended_errcode(db_), nullptr, "");
  const std::string msg = absl::StrCat(sql.substr(0, 60), ": ", err != nullptr ? err : "");
  sqlite3_free(err);
  return absl::Status(s.code(), absl::IsAborted(s) ? absl::StrCat("SQLITE_BUSY ", msg) : msg);
}

void SqlitePool::Returner::operator()(Conn* c) const {
  std::lock_guard<std::mutex> lock(pool->mu_);
  if (pool->idle_.size() < kMaxIdle) {
    pool->idle_.emplace_back(c);
  } else {
    delete c;
  }
}

absl::StatusOr<std::unique_ptr<SqlitePool>> SqlitePool::Open(const std::string& path,
                                                             absl::Duration busy_timeout,
                                                             absl::Duration busy_deadline) {
  std::unique_ptr<SqlitePool> pool(new SqlitePool(path, busy_timeout, busy_deadline));
  // Open one connection now so a bad path fails here (with retries: setting WAL may meet a lock).
  absl::Status s = pool->Raw([](Conn&) { return absl::OkStatus(); });
  if (!s.ok()) return s;
  return pool;
}

absl::StatusOr<SqlitePool::Lease> SqlitePool::Acquire() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!idle_.empty()) {
      Conn* c = idle_.back().release();
      idle_.pop_back();
      return Lease(c, Returner{this});
    }
  }
  absl::StatusOr<std::unique_ptr<Conn>> c = Conn::Open(path_, busy_timeout_);
  if (!c.ok()) return c.status();
  return Lease(c->release(), Returner{this});
}

absl::Status SqlitePool::Retry(const std::function<absl::Status(Conn&)>& attempt) {
  const absl::Time deadline = absl::Now() + busy_deadline_;
  thread_local std::minstd_rand rng(std::random_device{}());
  int64_t backoff_us = 200;
  absl::Status last;
  while (true) {
    absl::StatusOr<Lease> lease = Acquire();
    if (lease.ok()) {
      last = attempt(**lease);
    } else {
      last = lease.status();
    }
    if (!IsBusy(last)) return last;
    if (absl::Now() >= deadline) {
      return absl::UnavailableError(
          absl::StrCat("registry database stayed locked for ", absl::FormatDuration(busy_deadline_),
                       ": ", last.message()));
    }
    // Jittered exponential backoff so competing writers do not retry in lockstep.
    std::this_thread::sleep_for(std::chrono::microseconds(
        backoff_us / 2 + static_cast<int64_t>(rng() % static_cast<uint64_t>(backoff_us))));
    backoff_us = std::min<int64_t>(backoff_us * 2, 20000);
  }
}

absl::Status SqlitePool::Write(bool full_sync, const std::function<absl::Status(Conn&)>& fn) {
  return Retry([&](Conn& c) -> absl::Status {
    if (full_sync) {
      if (absl::Status s = c.Exec("PRAGMA synchronous=FULL"); !s.ok()) return s;
    }
    absl::Status s = c.Exec("BEGIN IMMEDIATE");
    if (s.ok()) {
      s = fn(c);
      if (s.ok()) s = c.Exec("COMMIT");
      if (!s.ok() && !sqlite3_get_autocommit(c.raw())) {
        // ROLLBACK of an open transaction does not fail with BUSY; ignore its status.
        (void)c.Exec("ROLLBACK");
      }
    }
    if (full_sync) {
      // Never let this turn a committed transaction into a retry (which would apply it twice); if it
      // failed, the connection merely stays at FULL, which is slower but just as correct.
      (void)c.Exec("PRAGMA synchronous=NORMAL");
    }
    return s;
  });
}

absl::Status SqlitePool::Read(const std::function<absl::Status(Conn&)>& fn) {
  return Retry([&](Conn& c) -> absl::Status {
    absl::Status s = c.Exec("BEGIN");
    if (!s.ok()) return s;
    s = fn(c);
    if (s.ok()) {
      s = c.Exec("COMMIT");
    }
    if (!sqlite3_get_autocommit(c.raw())) (void)c.Exec("ROLLBACK");
    return s;
  });
}

absl::Status SqlitePool::Raw(const std::function<absl::Status(Conn&)>& fn) { return Retry(fn); }

}  // namespace tessera::storage
