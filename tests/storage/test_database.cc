// A throwaway PostgreSQL server per test binary and a fresh database per test (see test_database.h).
#include "tests/storage/test_database.h"

#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "storage/database.h"

namespace tessera::storage::testing {
namespace {

namespace fs = std::filesystem;

// The directory holding initdb and pg_ctl, or "" if none is installed.
std::string FindBinDir() {
  if (const char* env = std::getenv("TESSERA_PG_BINDIR"); env != nullptr && *env != '\0') return env;
  std::string best;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const std::string bin = entry.path().string() + "/bin";
    // Highest major version wins ("15" > "13" as strings of equal length; compare numerically).
    if (fs::exists(bin + "/initdb") && fs::exists(bin + "/pg_ctl") &&
        (best.empty() || std::atoi(entry.path().filename().c_str()) >
                             std::atoi(fs::path(best).parent_path().filename().c_str()))) {
      best = bin;
    }
  }
  if (!best.empty()) return best;
  if (const char* path = std::getenv("PATH")) {
    std::stringstream dirs(path);
    std::string d;
    while (std::getline(dirs, d, ':')) {
      if (!d.empty() && fs::exists(d + "/initdb") && fs::exists(d + "/pg_ctl")) return d;
    }
  }
  return "";
}

int FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class PostgresServer {
 public:
  // The binary's server, started on first use.
  static PostgresServer& Get() {
    static PostgresServer* server = new PostgresServer();  // stopped by the atexit hook, never destroyed
    return *server;
  }
  const std::string& bin_dir() const { return bin_dir_; }
  const absl::Status& status() const { return status_; }

  // A new, empty database on this server; its URL.
  absl::StatusOr<std::string> NewDatabase() {
    if (!status_.ok()) return status_;
    static std::atomic<int> counter{0};
    const std::string name = absl::StrCat("t", ::getpid(), "_", counter.fetch_add(1));
    std::lock_guard<std::mutex> lock(mu_);
    if (admin_ == nullptr) {
      Database::Options o;
      o.busy_deadline = absl::Seconds(30);
      absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(Url("postgres"), o);
      if (!db.ok()) return db.status();
      admin_ = std::move(*db);
    }
    // CREATE DATABASE cannot run inside a transaction: Raw runs it on its own.
    absl::Status s = admin_->Raw([&](Conn& c) { return c.ExecScript(absl::StrCat("CREATE DATABASE ", name)); });
    if (!s.ok()) return s;
    return Url(name);
  }

 private:
  PostgresServer() {
    bin_dir_ = FindBinDir();
    if (bin_dir_.empty()) {
      status_ = absl::NotFoundError("no PostgreSQL server binaries (initdb, pg_ctl) found");
      return;
    }
    status_ = Start();
    if (status_.ok()) {
      owner_pid_ = ::getpid();
      std::atexit([] { Get().Stop(); });
    }
  }

  std::string Url(const std::string& db) const {
    return absl::StrCat("postgres://tessera@127.0.0.1:", port_, "/", db, "?connect_timeout=10");
  }

  // Runs bin_dir_/prog with args as the server's user (nobody when we are root); output to log_.
  absl::Status Run(const std::string& prog, const std::vector<std::string>& args) {
    const pid_t pid = ::fork();
    if (pid < 0) return absl::InternalError("fork failed");
    if (pid == 0) {
      const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      if (run_uid_ >= 0) {
        if (::setgroups(0, nullptr) != 0 || ::setgid(run_gid_) != 0 || ::setuid(run_uid_) != 0) ::_exit(126);
      }
      std::vector<std::string> all = {bin_dir_ + "/" + prog};
      all.insert(all.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (std::string& a : all) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return absl::InternalError(absl::StrCat(prog, " failed (status ", status, "); log ", log_, ":\n",
                                              ReadFile(log_)));
    }
    return absl::OkStatus();
  }

  absl::Status Start() {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/tessera_pg_XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) return absl::InternalError("mkdtemp for the PostgreSQL server failed");
    base_ = tmpl;
    log_ = base_ + "/server.log";
    if (::geteuid() == 0) {
      // initdb and postgres refuse to run as root: hand the directory to an unprivileged user.
      const passwd* pw = ::getpwnam("nobody");
      if (pw == nullptr) return absl::FailedPreconditionError("running as root and there is no user 'nobody'");
      run_uid_ = static_cast<int>(pw->pw_uid);
      run_gid_ = static_cast<int>(pw->pw_gid);
      if (::chown(base_.c_str(), pw->pw_uid, pw->pw_gid) != 0) return absl::InternalError("chown failed");
    }
    ::chmod(base_.c_str(), 0700);
    if (absl::Status s = Run("initdb", {"-D", base_ + "/data", "-U", "tessera", "-A", "trust", "-E", "UTF8",
                                        "--locale=C", "--no-sync", "--no-instructions"});
        !s.ok()) {
      return s;
    }
    for (int attempt = 0; attempt < 3; ++attempt) {
      port_ = FreeLoopbackPort();
      if (port_ <= 0) return absl::InternalError("no free loopback port");
      const std::string opts = absl::StrCat(
          "-c listen_addresses=127.0.0.1 -p ", port_, " -k ", base_,
          " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400"
          " -c shared_buffers=32MB -c max_pred_locks_per_transaction=256");
      absl::Status s = Run("pg_ctl", {"-D", base_ + "/data", "-l", base_ + "/postgres.log", "-w", "-t", "60", "-o",
                                      opts, "start"});
      if (s.ok()) return absl::OkStatus();
      if (attempt == 2) {
        return absl::Status(s.code(), absl::StrCat(s.message(), "\n", ReadFile(base_ + "/postgres.log")));
      }
    }
    return absl::InternalError("unreachable");
  }

  void Stop() {
    if (::getpid() != owner_pid_) return;  // a forked child exiting: the server is the parent's
    admin_.reset();
    (void)Run("pg_ctl", {"-D", base_ + "/data", "-m", "immediate", "-w", "stop"});
    std::error_code ec;
    fs::remove_all(base_, ec);
  }

  std::string bin_dir_;
  std::string base_;
  std::string log_;
  int port_ = 0;
  int run_uid_ = -1;
  int run_gid_ = -1;
  pid_t owner_pid_ = -1;
  absl::Status status_;
  std::mutex mu_;
  std::unique_ptr<Database> admin_;
};

}  // namespace

bool UsePostgres() {
  const char* v = std::getenv("TESSERA_TEST_REGISTRY");
  return v != nullptr && std::string(v) == "postgres";
}

TestDb::TestDb() {
  if (!UsePostgres()) return;
  PostgresServer& server = PostgresServer::Get();
  if (absl::IsNotFound(server.status())) {
    skip_reason_ = absl::StrCat("TESSERA_TEST_REGISTRY=postgres but ", server.status().message(),
                                " (Debian: apt-get install postgresql; or set TESSERA_PG_BINDIR)");
    return;
  }
  absl::StatusOr<std::string> url = server.NewDatabase();
  if (!url.ok()) {
    error_ = url.status();
    return;
  }
  url_ = *url;
}

absl::Status RawExec(const std::string& target, const std::string& sql) {
  Database::Options o;
  o.busy_deadline = absl::Seconds(10);
  absl::StatusOr<std::unique_ptr<Database>> db = Database::Open(target, o);
  if (!db.ok()) return db.status();
  return (*db)->Raw([&](Conn& c) { return c.ExecScript(sql); });
}

}  // namespace tessera::storage::testing
