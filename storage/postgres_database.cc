// PostgreSQL connections for the registry (see postgres_database.h).
#include "storage/postgres_database.h"

#include <libpq-fe.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <unordered_map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "storage/sv.h"

namespace tessera::storage {
namespace {

// Type OIDs of the parameters we bind (pg_type.h).
constexpr Oid kInt8Oid = 20;
constexpr Oid kFloat8Oid = 701;
constexpr Oid kTextOid = 25;

// Maps a failed result (or a connection failure when res is null) to a canonical Status.
absl::Status PgStatus(PGconn* conn, const PGresult* res, std::string_view what) {
  const char* state = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  std::string msg = res != nullptr ? PQresultErrorMessage(res) : PQerrorMessage(conn);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  const std::string code = state != nullptr ? state : "";
  msg = absl::StrCat(Sv(what.substr(0, 120)), ": ", msg, code.empty() ? "" : absl::StrCat(" (SQLSTATE ", code, ")"));
  if (PQstatus(conn) != CONNECTION_OK || code.rfind("08", 0) == 0 || code == "57P01" || code == "57P02" ||
      code == "57P03") {
    return absl::UnavailableError(absl::StrCat("PostgreSQL connection lost: ", msg));
  }
  if (code == "40001" || code == "40P01" || code == "55P03") return absl::AbortedError(msg);
  if (code == "23505") return absl::AlreadyExistsError(msg);
  if (code.rfind("23", 0) == 0 || code == "P0001") return absl::FailedPreconditionError(msg);
  if (code.rfind("53", 0) == 0) return absl::ResourceExhaustedError(msg);
  if (code == "XX001" || code == "XX002") return absl::DataLossError(msg);
  return absl::InternalError(msg);
}

class PgRows final : public Rows {
 public:
  explicit PgRows(PGresult* res) : res_(res), rows_(PQntuples(res)) {}
  ~PgRows() override { PQclear(res_); }
  absl::StatusOr<bool> Step() override { return ++row_ < rows_; }
  int64_t Int(int col) const override {
    const char* v = PQgetvalue(res_, row_, col);
    if (*v == 't') return 1;  // a boolean column
    if (*v == 'f') return 0;
    return std::strtoll(v, nullptr, 10);
  }
  double Real(int col) const override { return std::strtod(PQgetvalue(res_, row_, col), nullptr); }
  bool IsNull(int col) const override { return PQgetisnull(res_, row_, col) != 0; }
  std::string Text(int col) const override {
    return std::string(PQgetvalue(res_, row_, col), static_cast<size_t>(PQgetlength(res_, row_, col)));
  }

 private:
  PGresult* res_;
  int rows_;
  int row_ = -1;
};

class PgConn final : public Conn {
 public:
  explicit PgConn(PGconn* conn) : conn_(conn) {}
  ~PgConn() override { PQfinish(conn_); }
  Dialect dialect() const override { return Dialect::kPostgres; }
  int64_t Changes() const override { return changes_; }
  bool Healthy() const override { return PQstatus(conn_) == CONNECTION_OK; }

  absl::StatusOr<Stmt> PrepareValues(std::string_view sql, const std::vector<SqlValue>& args) override {
    auto it = rewritten_.find(std::string(sql));
    if (it == rewritten_.end()) it = rewritten_.emplace(std::string(sql), PostgresPlaceholders(sql)).first;
    std::vector<std::string> text(args.size());
    std::vector<const char*> values(args.size(), nullptr);
    std::vector<Oid> types(args.size(), 0);
    for (size_t i = 0; i < args.size(); ++i) {
      const SqlValue& v = args[i];
      if (const int64_t* x = std::get_if<int64_t>(&v)) {
        text[i] = absl::StrCat(*x);
        types[i] = kInt8Oid;
      } else if (const double* d = std::get_if<double>(&v)) {
        char buf[40];
        std::snprintf(buf, sizeof(buf), "%.17g", *d);  // round-trips every double
        text[i] = buf;
        types[i] = kFloat8Oid;
      } else if (const std::string_view* s = std::get_if<std::string_view>(&v)) {
        text[i] = std::string(*s);
        types[i] = kTextOid;
      } else {
        continue;  // NULL: values[i] stays nullptr, type inferred
      }
      values[i] = text[i].c_str();
    }
    PGresult* res = PQexecParams(conn_, it->second.c_str(), static_cast<int>(args.size()), types.data(),
                                 values.data(), nullptr, nullptr, 0);
    absl::Status s = Check(res, sql);
    if (!s.ok()) {
      PQclear(res);
      return s;
    }
    return Stmt(std::make_unique<PgRows>(res));
  }

  absl::Status ExecScript(const std::string& sql) override {
    PGresult* res = PQexec(conn_, sql.c_str());
    absl::Status s = Check(res, sql);
    PQclear(res);
    return s;
  }

  absl::Status AttemptWrite(bool /*full_sync: commits are always durable*/,
                            const std::function<absl::Status(Conn&)>& fn) override {
    return Transaction("BEGIN ISOLATION LEVEL SERIALIZABLE", fn);
  }
  absl::Status AttemptRead(const std::function<absl::Status(Conn&)>& fn) override {
    return Transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", fn);
  }

 private:
  absl::Status Check(PGresult* res, std::string_view what) {
    const ExecStatusType st = res != nullptr ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
      const char* n = PQcmdTuples(res);
      changes_ = (n != nullptr && *n != '\0') ? std::strtoll(n, nullptr, 10) : 0;
      return absl::OkStatus();
    }
    return PgStatus(conn_, res, what);
  }

  absl::Status Transaction(const char* begin, const std::function<absl::Status(Conn&)>& fn) {
    absl::Status s = ExecScript(begin);
    if (!s.ok()) return s;
    s = fn(*this);
    if (s.ok() && PQtransactionStatus(conn_) == PQTRANS_INERROR) {
      // A statement failed and the caller went on: PostgreSQL would silently turn COMMIT into ROLLBACK.
      s = absl::InternalError("registry transaction aborted by an earlier failed statement");
    }
    if (s.ok()) s = ExecScript("COMMIT");
    if (!s.ok() && PQtransactionStatus(conn_) != PQTRANS_IDLE && Healthy()) (void)ExecScript("ROLLBACK");
    return s;
  }

  PGconn* conn_;
  int64_t changes_ = 0;
  std::unordered_map<std::string, std::string> rewritten_;
};

void IgnoreNotice(void*, const char*) {}

}  // namespace

std::string PostgresPlaceholders(std::string_view sql) {
  std::string out;
  out.reserve(sql.size());
  char quote = 0;  // inside '...' or "..." when set
  for (size_t i = 0; i < sql.size(); ++i) {
    const char c = sql[i];
    if (quote != 0) {
      if (c == quote) quote = 0;  // a doubled quote closes and reopens: same result
      out += c;
    } else if (c == '\'' || c == '"') {
      quote = c;
      out += c;
    } else if (c == '?' && i + 1 < sql.size() && std::isdigit(static_cast<unsigned char>(sql[i + 1]))) {
      out += '$';
    } else {
      out += c;
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Conn>> OpenPostgresConn(const std::string& url, absl::Duration lock_timeout) {
  PGconn* conn = PQconnectdb(url.c_str());
  if (conn == nullptr) return absl::ResourceExhaustedError("PostgreSQL: out of memory connecting");
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(conn);
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    PQfinish(conn);
    return absl::UnavailableError(absl::StrCat("cannot connect to the PostgreSQL registry: ", msg));
  }
  PQsetNoticeProcessor(conn, IgnoreNotice, nullptr);
  auto c = std::make_unique<PgConn>(conn);
  // Timestamps are stored as integers (microseconds); UTC keeps any server-side time function stable.
  if (absl::Status s = c->ExecScript(absl::StrCat("SET TIME ZONE 'UTC'; SET lock_timeout = ",
                                                  std::max<int64_t>(1, absl::ToInt64Milliseconds(lock_timeout))));
      !s.ok()) {
    return s;
  }
  return std::unique_ptr<Conn>(std::move(c));
}

}  // namespace tessera::storage
