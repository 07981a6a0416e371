// Crash safety: a forked child publishes versions (blob, then row), promotes, rolls back, stores and
// deletes datasets, runs jobs and collects garbage in a loop; the parent kills it with SIGKILL at a random
// moment, at least 200 times. After every kill the parent reopens the registry and checks:
//   - PRAGMA integrity_check is ok (PostgreSQL: every table reads in full);
//   - every version and dataset row's blob exists and verifies (hash matches);
//   - no half-made version: each version has its publish change and vice versa;
//   - each live pointer names an existing version of its tenant (or 0) and matches the last move;
//   - version numbers are dense (1..n) per tenant;
//   - everything the child reported as committed (through a pipe, after the call returned) is there;
//   - no job is left RUNNING once its lease has expired (requeued at open).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "storage/registry.h"
#include "tests/storage/registry_test_util.h"

namespace tessera::storage {
namespace {

const char* const kTenants[] = {"acme", "beta", "gamma"};

void Report(int fd, const std::string& line) {
  const std::string l = line + "\n";
  // Lines are far below PIPE_BUF, so each write is atomic.
  if (::write(fd, l.data(), l.size()) < 0) _exit(5);
}

// The child's workload. Never returns: exits non-zero on any unexpected error, else runs until killed.
[[noreturn]] void ChildLoop(const std::string& dir, const std::string& database, int report_fd, uint32_t seed) {
  Registry::Options options;
  options.database = database;
  options.requeue_expired_on_open = true;
  auto opened = Registry::Open(dir, options);
  if (!opened.ok()) {
    std::fprintf(stderr, "child open: %s\n", opened.status().ToString().c_str());
    _exit(2);
  }
  Registry& reg = **opened;
  std::mt19937 rng(seed);
  auto fail = [](const char* what, const absl::Status& s) {
    std::fprintf(stderr, "child %s: %s\n", what, s.ToString().c_str());
    _exit(3);
  };
  for (int iter = 0;; ++iter) {
    const std::string tenant = kTenants[rng() % 3];
    const int op = static_cast<int>(rng() % 100);
    if (op < 35) {
      // Publish: the blob first (fsync'ed), then the row.
      std::string bytes(1000 + rng() % 60000, '\0');
      for (char& c : bytes) c = static_cast<char>(rng());
      auto digest = reg.blobs().Put(bytes);
      if (!digest.ok()) fail("put", digest.status());
      auto versions = reg.ListVersions(tenant);
      if (!versions.ok()) fail("list versions", versions.status());
      NewVersion v;
      v.tenant_id = tenant;
      v.parent_version = versions->empty() ? 0 : (*versions)[0].version;
      v.slots_json = "[[0,1]]";
      v.val_loss = 1.0 / (iter + 1);
      v.blob_digest = *digest;
      auto pub = reg.PublishVersion(v, "crash-child");
      if (!pub.ok()) fail("publish", pub.status());
      Report(report_fd, absl::StrCat("V ", tenant, " ", pub->version, " ", pub->sha256));
    } else if (op < 55) {
      auto versions = reg.ListVersions(tenant);
      if (!versions.ok()) fail("list versions", versions.status());
      const int64_t target = versions->empty() ? 0 : (*versions)[rng() % versions->size()].version;
      auto m = reg.Promote(tenant, target, "crash-child");
      if (!m.ok()) fail("promote", m.status());
      if (m->changed) Report(report_fd, absl::StrCat("L ", tenant, " ", m->seq, " ", m->live_version));
    } else if (op < 70) {
      auto m = reg.Rollback(tenant, std::nullopt, "crash-child");
      if (m.ok()) {
        if (m->changed) Report(report_fd, absl::StrCat("L ", tenant, " ", m->seq, " ", m->live_version));
      } else if (!absl::IsFailedPrecondition(m.status())) {
        fail("rollback", m.status());
      }
    } else if (op < 85) {
      std::string bytes = absl::StrCat("{\"text\": \"example ", rng(), "\"}\n");
      auto digest = reg.blobs().Put(bytes);
      if (!digest.ok()) fail("put dataset", digest.status());
      auto ds = reg.CreateDataset(NewDataset{tenant, "data", "jsonl", *digest, 1, 5}, "crash-child");
      if (!ds.ok()) fail("dataset", ds.status());
      Report(report_fd, absl::StrCat("D ", tenant, " ", ds->dataset_id, " ", ds->sha256));
      if (rng() % 2 == 0) {
        auto job = reg.CreateJob(NewJob{tenant, "{}", ds->dataset_id, "", "", 10}, "crash-child");
        if (!job.ok()) fail("create job", job.status());
      }
    } else if (op < 93) {
      // Run a job: claim with a short lease, sometimes finish it (else it is left to expire).
      auto claimed = reg.ClaimNextJob("crash-worker", absl::Milliseconds(50));
      if (!claimed.ok()) fail("claim", claimed.status());
      if (claimed->has_value() && rng() % 2 == 0) {
        auto done = reg.FinishJob((*claimed)->job_id, "crash-worker",
                                  JobResult{JobState::kSucceeded, "", std::nullopt, false});
        if (!done.ok()) fail("finish", done.status());
      }
    } else if (op < 97) {
      auto datasets = reg.ListDatasets(tenant);
      if (!datasets.ok()) fail("list datasets", datasets.status());
      if (!datasets->empty()) {
        const std::string id = (*datasets)[rng() % datasets->size()].dataset_id;
        absl::Status s = reg.DeleteDataset(tenant, id, "crash-child");
        if (s.ok()) {
          Report(report_fd, absl::StrCat("X ", tenant, " ", id));
        } else if (!absl::IsFailedPrecondition(s)) {
          fail("delete dataset", s);
        }
      }
    } else {
      // Grace zero is safe here: this process is the only writer and puts right before it publishes.
      auto gc = reg.CollectGarbage(absl::ZeroDuration());
      if (!gc.ok()) fail("gc", gc.status());
    }
  }
}

struct Committed {
  std::map<std::pair<std::string, int64_t>, std::string> versions;  // (tenant, version) -> digest
  std::map<std::string, std::string> datasets;                       // id -> digest
  std::set<std::string> deleted_datasets;
  std::map<int64_t, std::pair<std::string, int64_t>> moves;  // seq -> (tenant, live)
};

void ParseReports(const std::string& text, Committed* c) {
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f[0] == "V" && f.size() == 4) {
      c->versions[{f[1], std::stoll(f[2])}] = f[3];
    } else if (f[0] == "L" && f.size() == 4) {
      c->moves[std::stoll(f[2])] = {f[1], std::stoll(f[3])};
    } else if (f[0] == "D" && f.size() == 4) {
      c->datasets[f[2]] = f[3];
    } else if (f[0] == "X" && f.size() == 3) {
      c->deleted_datasets.insert(f[2]);
    }
  }
}

std::string DrainPipe(int fd) {
  std::string out;
  char buf[4096];
  while (true) {
    const ssize_t r = ::read(fd, buf, sizeof(buf));
    if (r > 0) {
      out.append(buf, static_cast<size_t>(r));
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  return out;
}

// Checks every invariant of the file header; returns the number of versions seen.
int64_t VerifyRegistry(Registry& reg, const Committed& committed, int round) {
  SCOPED_TRACE(absl::StrCat("after kill #", round));
  EXPECT_OK(reg.CheckIntegrity());
  auto changes = reg.ListChangesSince(0);
  EXPECT_TRUE(changes.ok()) << changes.status();
  if (!changes.ok()) return 0;
  int64_t total = 0;
  for (const char* tenant : kTenants) {
    auto versions = reg.ListVersions(tenant);
    EXPECT_TRUE(versions.ok()) << versions.status();
    if (!versions.ok()) continue;
    const int64_t n = static_cast<int64_t>(versions->size());
    total += n;
    std::set<int64_t> numbers;
    for (size_t i = 0; i < versions->size(); ++i) {
      const ExpertVersion& v = (*versions)[i];
      EXPECT_EQ(v.version, n - static_cast<int64_t>(i)) << tenant << ": numbers must be dense";
      numbers.insert(v.version);
      EXPECT_OK(reg.blobs().Verify(v.sha256));
      EXPECT_EQ(reg.blobs().Size(v.sha256).value_or(-1), v.size_bytes);
      EXPECT_LT(v.parent_version, v.version);
    }
    // Publish changes match version rows one to one.
    std::set<int64_t> published;
    int64_t last_live = 0;
    for (const Change& c : *changes) {
      if (c.tenant_id != tenant) continue;
      if (c.kind == ChangeKind::kPublish) {
        EXPECT_TRUE(published.insert(c.version).second) << "duplicate publish of " << c.version;
      } else {
        last_live = c.live_version;
      }
    }
    EXPECT_EQ(published, numbers) << tenant;
    auto live = reg.GetLive(tenant);
    EXPECT_TRUE(live.ok());
    if (live.ok()) {
      EXPECT_TRUE(*live == 0 || numbers.count(*live)) << tenant << " live " << *live;
      EXPECT_EQ(*live, last_live) << tenant;
    }
    auto datasets = reg.ListDatasets(tenant);
    EXPECT_TRUE(datasets.ok()) << datasets.status();
    for (const Dataset& d : datasets.value_or(std::vector<Dataset>())) {
      EXPECT_OK(reg.blobs().Verify(d.sha256));
    }
  }
  // Everything reported as committed survived the kill.
  for (const auto& [key, digest] : committed.versions) {
    auto v = reg.GetVersion(key.first, key.second);
    EXPECT_TRUE(v.ok()) << key.first << " v" << key.second << " lost: " << v.status();
    if (v.ok()) {
      EXPECT_EQ(v->sha256, digest);
    }
  }
  // A delete may commit without being reported (killed in between): the audit log says so.
  std::set<std::string> audited_deletes;
  auto audit = reg.ListAudit(0);
  EXPECT_TRUE(audit.ok()) << audit.status();
  for (const AuditEntry& e : audit.value_or(std::vector<AuditEntry>())) {
    if (e.action == "dataset.delete") audited_deletes.insert(e.target.substr(strlen("dataset/")));
  }
  for (const auto& [id, digest] : committed.datasets) {
    auto d = reg.GetDataset("", id);
    if (committed.deleted_datasets.count(id) || audited_deletes.count(id)) {
      EXPECT_TRUE(absl::IsNotFound(d.status())) << id;
      EXPECT_TRUE(audited_deletes.count(id)) << id << " deleted without its audit entry";
    } else {
      EXPECT_TRUE(d.ok()) << id << " lost: " << d.status();
      if (d.ok()) {
        EXPECT_EQ(d->sha256, digest);
      }
    }
  }
  std::map<int64_t, const Change*> by_seq;
  for (const Change& c : *changes) by_seq[c.seq] = &c;
  for (const auto& [seq, move] : committed.moves) {
    auto it = by_seq.find(seq);
    EXPECT_TRUE(it != by_seq.end()) << "live move " << seq << " lost";
    if (it != by_seq.end()) {
      EXPECT_EQ(it->second->tenant_id, move.first);
      EXPECT_EQ(it->second->live_version, move.second);
    }
  }
  return total;
}

TEST(CrashTest, SigkillAtRandomMomentsNeverCorrupts) {
  testing::TempDir dir;
  testing::TestDb db;  // PostgreSQL: the killed client's open transaction is rolled back by the server
  TESSERA_REQUIRE_DB(db);
  {
    auto reg = Registry::Open(dir.path(), db.Options());
    ASSERT_TRUE(reg.ok()) << reg.status();
    for (const char* t : kTenants) ASSERT_OK((*reg)->CreateTenant(t, t, "admin"));
  }
  const int kKills = 220;
  std::mt19937 rng(12345);
  Committed committed;
  int64_t versions_seen = 0;
  int kills_mid_work = 0;
  for (int round = 0; round < kKills; ++round) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const uint32_t seed = rng();
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      ChildLoop(dir.path(), db.url(), fds[1], seed);
    }
    ::close(fds[1]);
    // One round in four kills within 3 ms of the fork (during open / migration checks / requeue); the
    // others first wait until the child has committed something, then kill it 0-40 ms later, deep in
    // its loop. (Waiting on progress rather than on a fixed delay keeps this independent of speed.)
    std::string reports;
    if (round % 4 == 0) {
      ::usleep(static_cast<useconds_t>(rng() % 3000));
    } else {
      pollfd p{fds[0], POLLIN, 0};
      if (::poll(&p, 1, 30000) > 0) {
        char buf[4096];
        const ssize_t r = ::read(fds[0], buf, sizeof(buf));
        if (r > 0) reports.append(buf, static_cast<size_t>(r));
      }
      ::usleep(static_cast<useconds_t>(rng() % 40000));
    }
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    reports += DrainPipe(fds[0]);
    ::close(fds[0]);
    // The child must have died from our signal, never from an error of its own.
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "child exited by itself with status " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1)
        << " in round " << round;
    if (!reports.empty()) ++kills_mid_work;
    ParseReports(reports, &committed);

    auto reg = Registry::Open(dir.path(), db.Options());
    ASSERT_TRUE(reg.ok()) << "reopen after kill #" << round << ": " << reg.status();
    versions_seen = VerifyRegistry(**reg, committed, round);
    if (::testing::Test::HasFailure()) break;
  }
  // Final state: after the leases expire, reopening leaves no job RUNNING; GC removes orphans.
  ::usleep(60000);
  auto reg = Registry::Open(dir.path(), db.Options());
  ASSERT_TRUE(reg.ok());
  EXPECT_EQ((*reg)->CountJobs("", JobState::kRunning).value(), 0);
  auto gc = (*reg)->CollectGarbage(absl::ZeroDuration());
  ASSERT_TRUE(gc.ok()) << gc.status();
  VerifyRegistry(**reg, committed, kKills);
  std::printf("kills=%d kills_after_progress=%d versions=%lld reported_versions=%zu moves=%zu "
              "datasets=%zu gc_deleted_at_end=%lld\n",
              kKills, kills_mid_work, static_cast<long long>(versions_seen),
              committed.versions.size(), committed.moves.size(), committed.datasets.size(),
              static_cast<long long>(gc->blobs_deleted));
  EXPECT_GE(kills_mid_work, kKills * 3 / 4);  // the kills really interrupted work in progress
  EXPECT_GT(versions_seen, 20);
}

}  // namespace
}  // namespace tessera::storage
