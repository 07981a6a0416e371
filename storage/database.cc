// The Database seam: engine selection, the connection pool and the retrying transaction runners.
#include "storage/database.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "storage/postgres_database.h"
#include "storage/sqlite_pool.h"
#include "storage/sv.h"

namespace tessera::storage {
namespace {

constexpr size_t kMaxIdle = 64;  // enough for a gRPC thread pool; extra ones are closed on release

}  // namespace

absl::Status Stmt::Run() {
  while (true) {
    absl::StatusOr<bool> row = Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
  }
}

bool Database::IsPostgresUrl(std::string_view target) {
  return absl::StartsWith(Sv(target), "postgres://") || absl::StartsWith(Sv(target), "postgresql://");
}

absl::StatusOr<std::unique_ptr<Database>> Database::Open(const std::string& target, const Options& options) {
  if (target.empty()) return absl::InvalidArgumentError("database: empty path or URL");
  Connector connect;
  Dialect dialect = Dialect::kSqlite;
  if (IsPostgresUrl(target)) {
    dialect = Dialect::kPostgres;
    const absl::Duration lock_timeout = options.busy_timeout;
    connect = [target, lock_timeout] { return OpenPostgresConn(target, lock_timeout); };
  } else {
    const absl::Duration busy = options.busy_timeout;
    connect = [target, busy] { return OpenSqliteConn(target, busy); };
  }
  std::unique_ptr<Database> db(new Database(dialect, std::move(connect), options.busy_deadline));
  // Open one connection now so a bad path / URL fails here (with retries: setting WAL may meet a lock).
  absl::Status s = db->Raw([](Conn&) { return absl::OkStatus(); });
  if (!s.ok()) return s;
  return db;
}

void Database::Returner::operator()(Conn* c) const {
  std::unique_ptr<Conn> owned(c);
  if (!c->Healthy()) return;  // e.g. a PostgreSQL connection whose server went away
  std::lock_guard<std::mutex> lock(db->mu_);
  if (db->idle_.size() < kMaxIdle) db->idle_.push_back(std::move(owned));
}

absl::StatusOr<Database::Lease> Database::Acquire() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!idle_.empty()) {
      Conn* c = idle_.back().release();
      idle_.pop_back();
      return Lease(c, Returner{this});
    }
  }
  absl::StatusOr<std::unique_ptr<Conn>> c = connect_();
  if (!c.ok()) return c.status();
  return Lease(c->release(), Returner{this});
}

absl::Status Database::Retry(const std::function<absl::Status(Conn&)>& attempt) {
  const absl::Time deadline = absl::Now() + busy_deadline_;
  thread_local std::minstd_rand rng(std::random_device{}());
  int64_t backoff_us = 200;
  absl::Status last;
  while (true) {
    absl::StatusOr<Lease> lease = Acquire();
    last = lease.ok() ? attempt(**lease) : lease.status();
    if (!absl::IsAborted(last)) return last;
    if (absl::Now() >= deadline) {
      return absl::UnavailableError(absl::StrCat("registry database stayed locked for ",
                                                 absl::FormatDuration(busy_deadline_), ": ", last.message()));
    }
    // Jittered exponential backoff so competing writers do not retry in lockstep.
    std::this_thread::sleep_for(std::chrono::microseconds(
        backoff_us / 2 + static_cast<int64_t>(rng() % static_cast<uint64_t>(backoff_us))));
    backoff_us = std::min<int64_t>(backoff_us * 2, 20000);
  }
}

absl::Status Database::Write(bool full_sync, const std::function<absl::Status(Conn&)>& fn) {
  return Retry([&](Conn& c) { return c.AttemptWrite(full_sync, fn); });
}

absl::Status Database::Read(const std::function<absl::Status(Conn&)>& fn) {
  return Retry([&](Conn& c) { return c.AttemptRead(fn); });
}

absl::Status Database::Raw(const std::function<absl::Status(Conn&)>& fn) { return Retry(fn); }

}  // namespace tessera::storage
