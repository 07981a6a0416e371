// Concurrency: several threads and several processes share one data dir (SQLite) or one database
// (PostgreSQL) and do mixed operations. Checks: no SQLITE_BUSY / serialization failure (or any
// UNAVAILABLE / ABORTED / INTERNAL) reaches a caller; no lost update (every appended event and every
// claimed job is accounted for exactly once; each tenant's live-pointer history is one unbroken chain);
// no duplicate version numbers and numbers stay dense; cross-process waiters are woken by polling; a
// dead worker's job is reclaimed by another process and resumes from its checkpoint.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "storage/postgres_database.h"
#include "storage/registry.h"
#include "storage/sqlite_pool.h"
#include "tests/storage/registry_test_util.h"

namespace tessera::storage {
namespace {

using testing::RegistryTest;

const char* const kTenants[] = {"acme", "beta", "gamma", "delta"};

// Statuses a caller may legitimately see in the mixed workload (business outcomes, not contention).
bool Acceptable(const absl::Status& s) {
  return s.ok() || absl::IsFailedPrecondition(s);  // e.g. rollback with no history
}

// One unit of the mixed workload. Returns the first unacceptable status. Records published versions
// claimed jobs and live-pointer moves (`out` lines "V tenant n" / "C job_id" / "M tenant seq").
absl::Status MixedOp(Registry& reg, std::mt19937& rng, const std::string& worker,
                     const std::string& event_job, std::vector<std::string>* out) {
  const std::string tenant = kTenants[rng() % 4];
  switch (rng() % 8) {
    case 0:
    case 1: {
      auto digest = reg.blobs().Put(absl::StrCat("weights ", worker, " ", rng()));
      if (!digest.ok()) return digest.status();
      NewVersion v;
      v.tenant_id = tenant;
      v.blob_digest = *digest;
      auto pub = reg.PublishVersion(v, worker);
      if (!pub.ok()) return pub.status();
      out->push_back(absl::StrCat("V ", tenant, " ", pub->version));
      return absl::OkStatus();
    }
    case 2: {
      auto versions = reg.ListVersions(tenant);
      if (!versions.ok()) return versions.status();
      if (versions->empty()) return absl::OkStatus();
      auto move = reg.Promote(tenant, (*versions)[rng() % versions->size()].version, worker);
      if (!move.ok()) return move.status();
      if (move->changed) out->push_back(absl::StrCat("M ", tenant, " ", move->seq));
      return absl::OkStatus();
    }
    case 3: {
      auto move = reg.Rollback(tenant, std::nullopt, worker);
      if (!move.ok()) return Acceptable(move.status()) ? absl::OkStatus() : move.status();
      if (move->changed) out->push_back(absl::StrCat("M ", tenant, " ", move->seq));
      return absl::OkStatus();
    }
    case 4: {
      auto seq = reg.AppendJobEvent(event_job, "tick", absl::StrCat("{\"w\":\"", worker, "\"}"));
      if (!seq.ok()) return seq.status();
      out->push_back(absl::StrCat("E ", *seq));
      return absl::OkStatus();
    }
    case 5: {
      auto claimed = reg.ClaimNextJob(worker, absl::Minutes(10));
      if (!claimed.ok()) return claimed.status();
      if (!claimed->has_value()) return absl::OkStatus();
      out->push_back(absl::StrCat("C ", (*claimed)->job_id));
      return reg
          .FinishJob((*claimed)->job_id, worker, JobResult{JobState::kSucceeded, "", std::nullopt, false})
          .status();
    }
    case 6: {
      auto live = reg.GetLive(tenant);
      return live.status();
    }
    default: {
      auto page = reg.ListJobs("", 20, "");
      if (!page.ok()) return page.status();
      return reg.ListChangesSince(0, 50).status();
    }
  }
}

class ConcurrencyTest : public RegistryTest {
 protected:
  void SetUp() override {
    RegistryTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    for (const char* t : kTenants) MakeTenant(t);
    const std::string ds = MakeDataset("acme");
    event_job_ = MakeJob("acme", ds);
    // Cancelled so no worker claims it: its log then holds only QUEUED, CANCELLED and the appends.
    ASSERT_OK(reg_->CancelJob("acme", event_job_, "setup"));
    for (int i = 0; i < 120; ++i) {
      const std::string tenant = kTenants[i % 4];
      jobs_.insert(MakeJob(tenant, i % 4 == 0 ? ds : DatasetFor(tenant)));
    }
  }
  std::string DatasetFor(const std::string& tenant) {
    auto it = datasets_.find(tenant);
    if (it != datasets_.end()) return it->second;
    return datasets_[tenant] = MakeDataset(tenant);
  }
  // Checks the final state against everything the workers reported.
  void VerifyOutcome(const std::vector<std::string>& lines) {
    std::map<std::string, std::set<int64_t>> published;
    std::multiset<int64_t> event_seqs;
    std::multiset<std::string> claimed;
    std::map<std::string, std::set<int64_t>> moves;
    for (const std::string& line : lines) {
      std::vector<std::string> f = absl::StrSplit(line, ' ');
      if (f[0] == "V") {
        EXPECT_TRUE(published[f[1]].insert(std::stoll(f[2])).second)
            << "duplicate version " << f[1] << " v" << f[2];
      } else if (f[0] == "E") {
        event_seqs.insert(std::stoll(f[1]));
      } else if (f[0] == "C") {
        claimed.insert(f[1]);
      } else if (f[0] == "M") {
        EXPECT_TRUE(moves[f[1]].insert(std::stoll(f[2])).second) << "two moves got seq " << f[2];
      }
    }
    for (const char* tenant : kTenants) {
      const std::vector<ExpertVersion> versions = reg_->ListVersions(tenant).value();
      std::set<int64_t> numbers;
      for (const ExpertVersion& v : versions) numbers.insert(v.version);
      EXPECT_EQ(numbers, published[tenant]) << tenant;
      EXPECT_EQ(static_cast<int64_t>(numbers.size()), numbers.empty() ? 0 : *numbers.rbegin())
          << tenant << ": not dense";
      const int64_t live = reg_->GetLive(tenant).value();
      EXPECT_TRUE(live == 0 || numbers.count(live)) << tenant;
      // Live pointer: each move starts where the previous one ended (no move was lost or based on a
      // stale pointer), seqs strictly increase, and the last move is what is live now.
      const std::vector<Change> history = reg_->ListLiveHistory(tenant).value();  // newest first
      int64_t expect_previous = 0;
      int64_t last_seq = 0;
      std::set<int64_t> history_seqs;
      for (const Change& ch : history) history_seqs.insert(ch.seq);
      EXPECT_EQ(history_seqs, moves[tenant]) << tenant << ": the history is not exactly the moves callers saw";
      for (auto it = history.rbegin(); it != history.rend(); ++it) {
        EXPECT_EQ(it->previous_live, expect_previous) << tenant << " move seq " << it->seq;
        EXPECT_GT(it->seq, last_seq) << tenant;
        expect_previous = it->live_version;
        last_seq = it->seq;
      }
      EXPECT_EQ(live, expect_previous) << tenant;
    }
    // Events: every append got a distinct seq, and the log holds exactly 1..N (1, 2 = state events).
    std::set<int64_t> distinct(event_seqs.begin(), event_seqs.end());
    EXPECT_EQ(distinct.size(), event_seqs.size()) << "two appends got the same seq";
    const std::vector<JobEvent> events = reg_->ListJobEvents("acme", event_job_, 0).value();
    EXPECT_EQ(events.size(), event_seqs.size() + 2);
    for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].seq, static_cast<int64_t>(i + 1));
    // Jobs: each claimed by exactly one worker and finished.
    for (const std::string& job : claimed) {
      EXPECT_EQ(claimed.count(job), 1u) << job << " claimed twice";
      EXPECT_EQ(reg_->GetJob("", job).value().state, JobState::kSucceeded) << job;
    }
    EXPECT_OK(reg_->CheckIntegrity());
  }

  std::string event_job_;
  std::set<std::string> jobs_;
  std::map<std::string, std::string> datasets_;
};

TEST_F(ConcurrencyTest, ThreadsDoingMixedOperations) {
  constexpr int kThreads = 8;
  constexpr int kOpsPerThread = 150;
  std::mutex mu;
  std::vector<std::string> lines;
  std::vector<absl::Status> errors;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(1000 + t);
      std::vector<std::string> out;
      for (int i = 0; i < kOpsPerThread; ++i) {
        absl::Status s = MixedOp(*reg_, rng, absl::StrCat("thread-", t), event_job_, &out);
        if (!s.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          errors.push_back(s);
        }
      }
      std::lock_guard<std::mutex> lock(mu);
      lines.insert(lines.end(), out.begin(), out.end());
    });
  }
  for (auto& th : threads) th.join();
  for (const absl::Status& s : errors) ADD_FAILURE() << "caller saw: " << s;
  VerifyOutcome(lines);
}

TEST_F(ConcurrencyTest, ProcessesAndThreadsDoingMixedOperations) {
  constexpr int kProcesses = 4;
  constexpr int kThreadsPerProcess = 2;
  constexpr int kOpsPerThread = 100;
  reg_.reset();  // children open their own registries; the parent reopens after
  std::vector<std::pair<pid_t, int>> children;
  for (int p = 0; p < kProcesses; ++p) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      auto reg = Registry::Open(dir_.path(), DbOptions());
      if (!reg.ok()) _exit(2);
      std::mutex mu;
      std::vector<std::string> lines;
      int bad = 0;
      std::vector<std::thread> threads;
      for (int t = 0; t < kThreadsPerProcess; ++t) {
        threads.emplace_back([&, t] {
          std::mt19937 rng(p * 100 + t);
          std::vector<std::string> out;
          for (int i = 0; i < kOpsPerThread; ++i) {
            absl::Status s =
                MixedOp(**reg, rng, absl::StrCat("proc-", p, "-", t), event_job_, &out);
            if (!s.ok()) {
              std::lock_guard<std::mutex> lock(mu);
              std::fprintf(stderr, "process %d saw: %s\n", p, s.ToString().c_str());
              ++bad;
            }
          }
          std::lock_guard<std::mutex> lock(mu);
          lines.insert(lines.end(), out.begin(), out.end());
        });
      }
      for (auto& th : threads) th.join();
      std::string all;
      for (const std::string& l : lines) all += l + "\n";
      size_t off = 0;
      while (off < all.size()) {
        const ssize_t w = ::write(fds[1], all.data() + off, all.size() - off);
        if (w <= 0) _exit(4);
        off += static_cast<size_t>(w);
      }
      _exit(bad == 0 ? 0 : 3);
    }
    ::close(fds[1]);
    children.emplace_back(pid, fds[0]);
  }
  std::vector<std::string> lines;
  for (auto& [pid, fd] : children) {
    // Read before waiting: a child blocks on a full pipe until we drain it.
    std::string text;
    char buf[4096];
    ssize_t r;
    while ((r = ::read(fd, buf, sizeof(buf))) > 0) text.append(buf, static_cast<size_t>(r));
    ::close(fd);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "child " << pid << " status " << status << " (3 = a caller saw an error)";
    for (absl::string_view l : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
      lines.emplace_back(l);
    }
  }
  Reopen();
  VerifyOutcome(lines);
}

TEST_F(ConcurrencyTest, EveryQueuedJobClaimedExactlyOnceAcrossProcesses) {
  constexpr int kProcesses = 4;
  reg_.reset();
  std::vector<std::pair<pid_t, int>> children;
  for (int p = 0; p < kProcesses; ++p) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      auto reg = Registry::Open(dir_.path(), DbOptions());
      if (!reg.ok()) _exit(2);
      const std::string worker = absl::StrCat("worker-", p);
      while (true) {
        auto c = (*reg)->ClaimNextJob(worker, absl::Minutes(10));
        if (!c.ok()) _exit(3);
        if (!c->has_value()) break;
        const std::string line = (*c)->job_id + "\n";
        if (::write(fds[1], line.data(), line.size()) < 0) _exit(4);
        if (!(*reg)->Heartbeat((*c)->job_id, worker, absl::Minutes(10)).ok()) _exit(5);
        if (!(*reg)->FinishJob((*c)->job_id, worker, JobResult{JobState::kSucceeded, "", {}, false})
                 .ok()) {
          _exit(6);
        }
      }
      _exit(0);
    }
    ::close(fds[1]);
    children.emplace_back(pid, fds[0]);
  }
  std::multiset<std::string> claimed;
  for (auto& [pid, fd] : children) {
    std::string text;
    char buf[4096];
    ssize_t r;
    while ((r = ::read(fd, buf, sizeof(buf))) > 0) text.append(buf, static_cast<size_t>(r));
    ::close(fd);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
    for (absl::string_view l : absl::StrSplit(text, '\n', absl::SkipEmpty())) claimed.emplace(l);
  }
  Reopen();
  const std::set<std::string>& want = jobs_;
  EXPECT_EQ(claimed.size(), want.size());
  EXPECT_EQ(std::set<std::string>(claimed.begin(), claimed.end()), want);
  EXPECT_EQ(reg_->CountJobs("", JobState::kSucceeded).value(), static_cast<int64_t>(want.size()));
  EXPECT_EQ(reg_->CountJobs("", JobState::kQueued).value(), 0);
}

TEST_F(ConcurrencyTest, WaiterInAnotherProcessIsWokenByPolling) {
  const int64_t seq = reg_->ChangeSequence().value();
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto reg = Registry::Open(dir_.path(), DbOptions());
    if (!reg.ok()) _exit(2);
    ::usleep(100000);
    if (!(*reg)->AppendJobEvent(event_job_, "from-child", "{}").ok()) _exit(3);
    auto d = (*reg)->blobs().Put("child weights");
    NewVersion v;
    v.tenant_id = "beta";
    v.blob_digest = d.value_or("");
    if (!(*reg)->PublishVersion(v, "child").ok()) _exit(4);
    _exit(0);
  }
  auto woke = reg_->WaitForJobEvents(event_job_, 2, absl::Seconds(30));
  ASSERT_TRUE(woke.ok()) << woke.status();
  EXPECT_TRUE(*woke);
  auto changed = reg_->WaitForChange(seq, absl::Seconds(30));
  ASSERT_TRUE(changed.ok());
  EXPECT_TRUE(*changed);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(reg_->ListJobEvents("acme", event_job_, 2).value().at(0).type, "from-child");
  EXPECT_EQ(reg_->GetVersion("beta", 1).value().sha256, reg_->blobs().Put("child weights").value());
}

// Holds a write lock from a foreign connection (another "process") until destroyed: SQLite's database
// write lock (BEGIN IMMEDIATE); on PostgreSQL an EXCLUSIVE lock on the tenants table, which blocks any
// live-pointer move but not reads.
class ExternalWriteLock {
 public:
  explicit ExternalWriteLock(const std::string& target) {
    auto conn = Database::IsPostgresUrl(target) ? OpenPostgresConn(target, absl::Seconds(5))
                                                : OpenSqliteConn(target, absl::Seconds(5));
    if (!conn.ok()) return;
    conn_ = std::move(*conn);
    ok_ = conn_->ExecScript(conn_->dialect() == Dialect::kPostgres
                                ? "BEGIN; LOCK TABLE tenants IN EXCLUSIVE MODE"
                                : "BEGIN IMMEDIATE; INSERT INTO audit_log(actor, action, target, detail, "
                                  "created_at_us) VALUES ('locker', 'lock', '', '', 0)")
              .ok();
  }
  ~ExternalWriteLock() {
    if (conn_ != nullptr) (void)conn_->ExecScript("COMMIT");
  }
  bool ok() const { return ok_; }

 private:
  std::unique_ptr<Conn> conn_;
  bool ok_ = false;
};

TEST_F(ConcurrencyTest, LockHeldLongerThanBusyTimeoutIsRetriedNotReported) {
  Registry::Options options;
  options.busy_timeout = absl::Milliseconds(20);  // the engine gives up fast; our retry loop must not
  Reopen(options);
  Publish("acme");
  std::atomic<bool> released{false};
  auto lock = std::make_unique<ExternalWriteLock>(DbTarget());
  ASSERT_TRUE(lock->ok());
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    released = true;
    lock.reset();
  });
  auto move = reg_->Promote("acme", 1, "k");  // blocks ~400 ms, well past the 20 ms busy timeout
  const bool was_released = released.load();
  releaser.join();
  ASSERT_TRUE(move.ok()) << move.status();
  EXPECT_TRUE(was_released);
  EXPECT_EQ(reg_->GetLive("acme").value(), 1);
}

TEST_F(ConcurrencyTest, LockHeldPastTheDeadlineIsUnavailable) {
  Registry::Options options;
  options.busy_timeout = absl::Milliseconds(20);
  options.busy_deadline = absl::Milliseconds(200);
  Reopen(options);
  Publish("acme");
  ExternalWriteLock lock(DbTarget());
  ASSERT_TRUE(lock.ok());
  auto move = reg_->Promote("acme", 1, "k");
  EXPECT_CODE(move, kUnavailable);
  // Reads are not blocked by a writer (WAL mode; PostgreSQL MVCC).
  EXPECT_EQ(reg_->GetLive("acme").value(), 0);
}

TEST(ConcurrentOpenTest, ProcessesCreatingTheSameFreshDataDir) {
  testing::TempDir dir;
  testing::TestDb db;  // PostgreSQL: one fresh database that every process migrates at once
  TESSERA_REQUIRE_DB(db);
  const std::string data_dir = dir.path() + "/fresh";
  constexpr int kProcesses = 6;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcesses; ++p) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto reg = Registry::Open(data_dir, db.Options());
      if (!reg.ok()) {
        std::fprintf(stderr, "open: %s\n", reg.status().ToString().c_str());
        _exit(2);
      }
      if (!(*reg)->CreateTenant(absl::StrCat("t", p), "", "proc").ok()) _exit(3);
      _exit(0);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  }
  auto reg = Registry::Open(data_dir, db.Options());
  ASSERT_TRUE(reg.ok()) << reg.status();
  EXPECT_EQ((*reg)->SchemaVersion().value(), Registry::LatestSchemaVersion());
  EXPECT_EQ((*reg)->ListTenants().value().size(), static_cast<size_t>(kProcesses));
  EXPECT_OK((*reg)->CheckIntegrity());
}

}  // namespace
}  // namespace tessera::storage
