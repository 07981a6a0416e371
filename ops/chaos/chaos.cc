// tessera-chaos: SIGKILLs a real tessera-server at random moments while jobs train, versions publish,
// live pointers move and clients query, and checks the registry's invariants after every kill.
//
// Loop, --kills times: start tessera-server on the same data dir (random:tiny on the CPU, a 1 s job
// lease), check recovery, run the workload from --clients threads for a random time in
// [--min-run-ms, --max-run-ms] (one time in four up to 3x --max-run-ms, so jobs finish too), SIGKILL
// the server, then open the data dir itself (storage::Registry, the server dead) and check:
//   integrity  PRAGMA integrity_check is ok;
//   blobs      every version's and dataset's blob is present and its sha256 verifies;
//   versions   per tenant numbered 1..n; no job has two versions; a version's job is SUCCEEDED with
//              that result_version (publishing and finishing are one transaction), and a SUCCEEDED
//              job's result_version is a version of that job;
//   live       each tenant has one live pointer, naming 0 or an existing version, equal to its last
//              promote/rollback change;
//   acked      every mutation the server acknowledged to a client is there: tenants, datasets (same
//              sha256), jobs, cancels (still CANCELLED), jobs seen SUCCEEDED (same result_version),
//              versions seen (same sha256), live-pointer moves (a change row each, as a multiset).
// Recovery (after each restart, the server running): the jobs that were RUNNING under the killed
// server's lease are, within 3 leases + 10 s, no longer RUNNING under it (requeued, retried or
// finished): nothing is stuck RUNNING. At the end the server is restarted once more and the queue is
// drained (every job terminal), then stopped with SIGTERM and checked a last time.
//
// The workload (acknowledged = the RPC returned OK; an RPC cut by the kill is not, whether or not it
// committed): Generate for random tenants; CreateJob (2-6 steps, explicit slots, auto_promote half of
// the time; at most --max-open-jobs unfinished); GetJob; Admin.Promote of a random version or 0;
// Admin.Rollback (plain or to a version); dataset uploads; cancels.
//
// The last stdout line: kills=<n> kills_with_running_jobs=<n> invariant_checks=<n> failures=<n> distinct_violations=<n>
// acked_mutations=<n> versions=<n> jobs_succeeded=<n> generates_ok=<n> (failures counts failed checks:
// a violation left in the data fails again after every later kill; distinct_violations counts each
// once). Exit status 0 iff failures=0. ops/test.sh runs a short version; ops/bench/RESULTS.md has the
// full figures, and what it found in the build before Registry::PublishJobVersion.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "grpcpp/grpcpp.h"
#include "storage/registry.h"
#include "tessera/v1/admin.grpc.pb.h"
#include "tessera/v1/datasets.grpc.pb.h"
#include "tessera/v1/fine_tuning.grpc.pb.h"
#include "tessera/v1/inference.grpc.pb.h"

namespace {

namespace v1 = tessera::v1;
namespace storage = tessera::storage;
using Clock = std::chrono::steady_clock;

constexpr char kUsage[] = R"(tessera-chaos: SIGKILL a real tessera-server at random moments under load; check the registry.
Usage: tessera-chaos [options]
  --kills N            SIGKILLs (default 200)
  --seed S             random seed (default 1)
  --server-bin PATH    tessera-server (default: ../../services/tessera-server next to this binary)
  --backbone SPEC      backbone of the server (default random:tiny)
  --tenants N          tenants (default 3)
  --clients N          client threads (default 4)
  --min-run-ms N       shortest time from a server's start to its kill (default 300)
  --max-run-ms N       longest (default 4000)
  --max-open-jobs N    unfinished jobs the clients keep at most (default 4)
  --drain-seconds S    at the end: wait at most this long for every job to finish (default 300)
  --keep-data-dir      keep the temporary dir (its path is printed)
  --help               this text
Exit status 0 iff every invariant held after every kill.
)";

struct Flags {
  int kills = 200;
  uint32_t seed = 1;
  std::string server_bin;
  std::string backbone = "random:tiny";
  int tenants = 3;
  int clients = 4;
  int min_run_ms = 300;
  int max_run_ms = 4000;
  int max_open_jobs = 4;
  int drain_seconds = 300;
  bool keep = false;
};

constexpr int kLeaseSeconds = 1;

std::string g_root;  // temp dir: data/, server.log
pid_t g_server = 0;
int g_port = 0;
int g_server_stdout = -1;  // the read end of the server's stdout, kept open so it never gets SIGPIPE

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "tessera-chaos: FAILED: %s\n", msg.c_str());
  if (g_server > 0) {
    ::kill(g_server, SIGKILL);
    ::waitpid(g_server, nullptr, 0);
  }
  if (!g_root.empty()) std::fprintf(stderr, "tessera-chaos: data kept in %s\n", g_root.c_str());
  std::exit(2);
}

std::string SelfDir() {
  std::error_code ec;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : self.parent_path().string();
}

// Starts the server on the data dir (port 0) and returns once it printed its port.
void StartServer(const Flags& f) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) Die(absl::StrCat("pipe: ", std::strerror(errno)));
  const std::string log_path = g_root + "/server.log";
  std::vector<std::string> args = {f.server_bin, "--data-dir", g_root + "/data", "--listen", "127.0.0.1:0",
                                   "--backbone", f.backbone, "--device", "cpu", "--job-lease-seconds",
                                   std::to_string(kLeaseSeconds), "--max-concurrent-jobs", "2",
                                   "--log-level", "warn", "--general-eval-data", g_root + "/general.jsonl"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) Die(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (log < 0 || ::dup2(out[1], STDOUT_FILENO) < 0 || ::dup2(log, STDERR_FILENO) < 0) ::_exit(127);
    ::execv(f.server_bin.c_str(), argv.data());
    ::_exit(127);
  }
  g_server = pid;
  ::close(out[1]);
  std::string buf;
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (Clock::now() < deadline) {
    for (size_t nl; (nl = buf.find('\n')) != std::string::npos;) {
      const std::string line = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      constexpr std::string_view kBanner = "listening on port ";
      if (size_t at = line.find(kBanner); at != std::string::npos) {
        std::string rest = line.substr(at + kBanner.size());
        rest = rest.substr(0, rest.find_first_not_of("0123456789"));
        if (absl::SimpleAtoi(rest, &g_port) && g_port > 0) {
          g_server_stdout = out[0];  // closed when the server is killed
          return;
        }
      }
    }
    char chunk[512];
    pollfd pfd{out[0], POLLIN, 0};
    ssize_t n = 0;
    if (::poll(&pfd, 1, 100) > 0) n = ::read(out[0], chunk, sizeof(chunk));
    if (n > 0) {
      buf.append(chunk, static_cast<size_t>(n));
      continue;
    }
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      g_server = 0;
      Die(absl::StrCat("tessera-server exited during startup (see ", log_path, ")"));
    }
  }
  Die("tessera-server did not print its port within 120 s");
}

void KillServer(int sig) {
  if (g_server <= 0) return;
  ::kill(g_server, sig);
  int status = 0;
  ::waitpid(g_server, &status, 0);
  g_server = 0;
  if (g_server_stdout >= 0) ::close(g_server_stdout);
  g_server_stdout = -1;
}

std::shared_ptr<grpc::Channel> Channel() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", g_port), grpc::InsecureChannelCredentials(), args);
}

std::unique_ptr<grpc::ClientContext> Ctx(const std::string& key, int seconds = 10) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->AddMetadata("authorization", "Bearer " + key);
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return ctx;
}

// ---- What the server acknowledged (the client-side log) ------------------------------------------

struct Acked {
  std::mutex mu;
  std::set<std::string> tenants;
  std::map<std::pair<std::string, std::string>, std::string> datasets;  // (tenant, id) -> sha256
  std::map<std::string, std::string> jobs;                             // id -> tenant
  std::set<std::string> open_jobs;                                     // not yet seen terminal
  std::set<std::string> cancelled;
  std::map<std::string, int64_t> succeeded;                            // job -> result_version
  std::map<std::pair<std::string, int64_t>, std::string> versions;     // (tenant, v) -> sha256
  // Live-pointer moves: (tenant, previous, live) -> count.
  std::map<std::tuple<std::string, int64_t, int64_t>, int> moves;
  int64_t count = 0;  // acknowledged mutations in all
};

struct TenantInfo {
  std::string id, key, dataset;
};

struct Stats {
  std::atomic<int64_t> generates_ok{0}, rpc_errors{0};
};

std::string DatasetBytes(int seed) {
  std::string out;
  std::mt19937 rng(seed);
  for (int i = 0; i < 16; ++i) {
    const int a = static_cast<int>(rng() % 50), b = static_cast<int>(rng() % 50);
    absl::StrAppend(&out, "{\"prompt\":\"add(", a, ",", b, ")=\",\"completion\":\"", a + b, "\"}\n");
  }
  return out;
}

grpc::Status Upload(v1::Datasets::Stub& stub, const TenantInfo& t, const std::string& bytes, v1::Dataset* out) {
  auto ctx = Ctx(t.key);
  auto writer = stub.UploadDataset(ctx.get(), out);
  v1::UploadDatasetRequest r;
  r.set_tenant_id(t.id);
  r.set_name("chaos");
  r.set_format("jsonl");
  r.set_chunk(bytes);
  writer->Write(r);
  writer->WritesDone();
  return writer->Finish();
}

// One client thread until `stop`.
void Client(int index, uint32_t seed, const std::vector<TenantInfo>& tenants, const std::string& admin_key,
            int max_open_jobs, std::atomic<bool>* stop, Acked* acked, Stats* stats) {
  std::mt19937 rng(seed);
  auto channel = Channel();
  auto inference = v1::Inference::NewStub(channel);
  auto tuning = v1::FineTuning::NewStub(channel);
  auto admin = v1::Admin::NewStub(channel);
  auto datasets = v1::Datasets::NewStub(channel);
  int n = 0;
  while (!stop->load()) {
    const TenantInfo& t = tenants[rng() % tenants.size()];
    const int op = static_cast<int>(rng() % 100);
    ++n;
    if (op < 40) {
      v1::GenerateRequest r;
      r.set_tenant_id(t.id);
      r.set_prompt("add(3,4)=");
      r.set_max_tokens(4);
      v1::GenerateResponse resp;
      grpc::Status s = inference->Generate(Ctx(t.key).get(), r, &resp);
      s.ok() ? ++stats->generates_ok : ++stats->rpc_errors;
    } else if (op < 55) {
      {
        std::lock_guard<std::mutex> lock(acked->mu);
        if (static_cast<int>(acked->open_jobs.size()) >= max_open_jobs) continue;
      }
      v1::CreateJobRequest r;
      r.set_tenant_id(t.id);
      r.set_training_dataset_id(t.dataset);
      r.mutable_hyperparameters()->set_max_steps(2 + static_cast<int64_t>(rng() % 5));
      r.mutable_hyperparameters()->set_batch_size(4);
      r.mutable_hyperparameters()->set_seq_len(32);
      auto* slot = r.mutable_expert_selection()->mutable_explicit_()->add_slots();
      slot->set_layer(static_cast<int>(rng() % 2));
      slot->set_expert(static_cast<int>(rng() % 4));
      r.set_auto_promote(rng() % 2 == 0);
      r.set_idempotency_key(absl::StrCat("chaos-", seed, "-", index, "-", n));
      v1::Job job;
      grpc::Status s = tuning->CreateJob(Ctx(t.key).get(), r, &job);
      if (!s.ok()) {
        ++stats->rpc_errors;
        continue;
      }
      std::lock_guard<std::mutex> lock(acked->mu);
      acked->jobs[job.job_id()] = t.id;
      acked->open_jobs.insert(job.job_id());
      ++acked->count;
    } else if (op < 70) {
      std::string job_id;
      {
        std::lock_guard<std::mutex> lock(acked->mu);
        if (acked->open_jobs.empty()) continue;
        auto it = acked->open_jobs.begin();
        std::advance(it, rng() % acked->open_jobs.size());
        job_id = *it;
      }
      const std::string tenant = acked->jobs.at(job_id);
      const TenantInfo* ti = nullptr;
      for (const TenantInfo& x : tenants) {
        if (x.id == tenant) ti = &x;
      }
      v1::GetJobRequest r;
      r.set_tenant_id(tenant);
      r.set_job_id(job_id);
      v1::Job job;
      grpc::Status s = tuning->GetJob(Ctx(ti->key).get(), r, &job);
      if (!s.ok()) {
        ++stats->rpc_errors;
        continue;
      }
      std::lock_guard<std::mutex> lock(acked->mu);
      if (job.state() == v1::SUCCEEDED) acked->succeeded[job_id] = job.result_version();
      if (job.state() == v1::SUCCEEDED || job.state() == v1::FAILED || job.state() == v1::CANCELLED) {
        acked->open_jobs.erase(job_id);
      }
    } else if (op < 85) {
      // Promote a random version (or 0), or roll back.
      v1::ListVersionsRequest lr;
      lr.set_tenant_id(t.id);
      v1::ListVersionsResponse versions;
      grpc::Status s = admin->ListVersions(Ctx(admin_key).get(), lr, &versions);
      if (!s.ok()) {
        ++stats->rpc_errors;
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(acked->mu);
        for (const v1::ExpertVersion& v : versions.versions()) acked->versions[{t.id, v.version()}] = v.sha256();
      }
      v1::LiveVersionResponse live;
      if (rng() % 3 != 0) {
        v1::PromoteRequest p;
        p.set_tenant_id(t.id);
        const int m = versions.versions_size();
        p.set_version(m == 0 || rng() % 4 == 0 ? 0 : versions.versions(static_cast<int>(rng() % m)).version());
        s = admin->Promote(Ctx(admin_key).get(), p, &live);
      } else {
        v1::RollbackRequest rb;
        rb.set_tenant_id(t.id);
        const int m = versions.versions_size();
        if (m > 0 && rng() % 2 == 0) rb.set_to_version(versions.versions(static_cast<int>(rng() % m)).version());
        s = admin->Rollback(Ctx(admin_key).get(), rb, &live);
        if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) continue;  // nothing to roll back to
      }
      if (!s.ok()) {
        ++stats->rpc_errors;
        continue;
      }
      if (live.changed()) {
        std::lock_guard<std::mutex> lock(acked->mu);
        ++acked->moves[{t.id, live.previous_version(), live.live_version()}];
        ++acked->count;
      }
    } else if (op < 93) {
      v1::Dataset ds;
      grpc::Status s = Upload(*datasets, t, DatasetBytes(static_cast<int>(rng())), &ds);
      if (!s.ok()) {
        ++stats->rpc_errors;
        continue;
      }
      std::lock_guard<std::mutex> lock(acked->mu);
      acked->datasets[{t.id, ds.dataset_id()}] = ds.sha256();
      ++acked->count;
    } else {
      std::string job_id;
      {
        std::lock_guard<std::mutex> lock(acked->mu);
        if (acked->open_jobs.empty() || rng() % 40 != 0) continue;  // cancel rarely: jobs should finish
        auto it = acked->open_jobs.begin();
        std::advance(it, rng() % acked->open_jobs.size());
        job_id = *it;
      }
      v1::CancelJobRequest r;
      r.set_job_id(job_id);
      v1::Job job;
      grpc::Status s = admin->CancelJob(Ctx(admin_key).get(), r, &job);
      if (!s.ok()) {
        if (s.error_code() != grpc::StatusCode::FAILED_PRECONDITION) ++stats->rpc_errors;  // finished already
        continue;
      }
      std::lock_guard<std::mutex> lock(acked->mu);
      acked->cancelled.insert(job_id);
      acked->open_jobs.erase(job_id);
      ++acked->count;
    }
  }
}

// ---- Invariants -------------------------------------------------------------------------------------

struct Checker {
  int64_t checks = 0;
  int64_t failures = 0;          // failed checks (a violation still there at the next kill fails again)
  std::set<std::string> distinct;  // each violation once; printed when first seen
  std::string when;
  void Expect(bool ok, const std::string& what) {
    ++checks;
    if (!ok) {
      ++failures;
      if (distinct.insert(what).second) {
        std::fprintf(stderr, "tessera-chaos: VIOLATION (first seen %s): %s\n", when.c_str(), what.c_str());
      }
    }
  }
};

std::unique_ptr<storage::Registry> OpenRegistry() {
  storage::Registry::Options o;
  o.requeue_expired_on_open = false;  // look, do not repair: recovery is the server's job
  absl::StatusOr<std::unique_ptr<storage::Registry>> r = storage::Registry::Open(g_root + "/data", o);
  if (!r.ok()) Die(absl::StrCat("opening the registry: ", r.status().ToString()));
  return *std::move(r);
}

std::vector<storage::Job> AllJobs(storage::Registry& reg) {
  std::vector<storage::Job> out;
  std::string token;
  do {
    absl::StatusOr<storage::JobPage> page = reg.ListJobs("", 1000, token);
    if (!page.ok()) Die(absl::StrCat("listing jobs: ", page.status().ToString()));
    out.insert(out.end(), page->jobs.begin(), page->jobs.end());
    token = page->next_page_token;
  } while (!token.empty());
  return out;
}

// The checks of the top comment on a dead server's data dir. Returns the lease owners of RUNNING jobs
// (the dead server's worker ids).
std::map<std::string, std::string> CheckOffline(Checker& c, Acked& acked) {
  std::unique_ptr<storage::Registry> reg = OpenRegistry();
  c.Expect(reg->CheckIntegrity().ok(), "PRAGMA integrity_check");
  absl::StatusOr<std::vector<storage::Tenant>> tenants = reg->ListTenants();
  if (!tenants.ok()) Die(tenants.status().ToString());
  const std::vector<storage::Job> jobs = AllJobs(*reg);
  std::map<std::string, const storage::Job*> job_by_id;
  for (const storage::Job& j : jobs) job_by_id[j.job_id] = &j;
  std::map<std::pair<std::string, int64_t>, storage::ExpertVersion> versions;
  std::map<std::string, int> versions_of_job;
  std::set<std::pair<std::string, std::string>> dataset_keys;
  std::map<std::pair<std::string, std::string>, std::string> dataset_sha;
  for (const storage::Tenant& t : *tenants) {
    absl::StatusOr<std::vector<storage::ExpertVersion>> vs = reg->ListVersions(t.tenant_id);
    if (!vs.ok()) Die(vs.status().ToString());
    const int64_t n = static_cast<int64_t>(vs->size());
    for (const storage::ExpertVersion& v : *vs) {
      versions[{t.tenant_id, v.version}] = v;
      c.Expect(v.version >= 1 && v.version <= n,
               absl::StrCat(t.tenant_id, " version ", v.version, " of ", n, ": numbers not dense"));
      c.Expect(reg->blobs().Verify(v.sha256).ok(),
               absl::StrCat(t.tenant_id, " version ", v.version, ": blob ", v.sha256, " missing or corrupt"));
      if (!v.job_id.empty()) {
        ++versions_of_job[v.job_id];
        auto it = job_by_id.find(v.job_id);
        const bool ok = it != job_by_id.end() && it->second->state == storage::JobState::kSucceeded &&
                        it->second->result_version == std::optional<int64_t>(v.version);
        c.Expect(ok, absl::StrCat(t.tenant_id, " version ", v.version, " of job ", v.job_id,
                                  ": the job is not SUCCEEDED with it (",
                                  it == job_by_id.end() ? "no such job"
                                                        : std::string(storage::JobStateName(it->second->state)),
                                  ")"));
      }
    }
    absl::StatusOr<std::vector<storage::Dataset>> ds = reg->ListDatasets(t.tenant_id);
    if (!ds.ok()) Die(ds.status().ToString());
    for (const storage::Dataset& d : *ds) {
      dataset_sha[{t.tenant_id, d.dataset_id}] = d.sha256;
      c.Expect(reg->blobs().Verify(d.sha256).ok(),
               absl::StrCat("dataset ", d.dataset_id, ": blob missing or corrupt"));
    }
    // Live pointer.
    absl::StatusOr<int64_t> live = reg->GetLive(t.tenant_id);
    c.Expect(live.ok(), absl::StrCat(t.tenant_id, ": no live pointer"));
    if (live.ok()) {
      c.Expect(*live == 0 || versions.count({t.tenant_id, *live}) == 1,
               absl::StrCat(t.tenant_id, ": live version ", *live, " does not exist"));
      absl::StatusOr<std::vector<storage::Change>> last = reg->ListLiveHistory(t.tenant_id, 1);
      if (last.ok() && !last->empty()) {
        c.Expect((*last)[0].live_version == *live,
                 absl::StrCat(t.tenant_id, ": live ", *live, " but the last move says ", (*last)[0].live_version));
      }
    }
  }
  for (const auto& [job_id, n] : versions_of_job) {
    c.Expect(n == 1, absl::StrCat("job ", job_id, " has ", n, " versions"));
  }
  for (const storage::Job& j : jobs) {
    if (j.state == storage::JobState::kSucceeded) {
      const bool ok = j.result_version.has_value() && versions.count({j.tenant_id, *j.result_version}) == 1 &&
                      versions[{j.tenant_id, *j.result_version}].job_id == j.job_id;
      c.Expect(ok, absl::StrCat("SUCCEEDED job ", j.job_id, ": result_version is not its version"));
    }
  }
  // Acknowledged mutations.
  std::lock_guard<std::mutex> lock(acked.mu);
  std::set<std::string> tenant_ids;
  for (const storage::Tenant& t : *tenants) tenant_ids.insert(t.tenant_id);
  for (const std::string& t : acked.tenants) c.Expect(tenant_ids.count(t) == 1, absl::StrCat("acked tenant ", t, " missing"));
  for (const auto& [key, sha] : acked.datasets) {
    auto it = dataset_sha.find(key);
    c.Expect(it != dataset_sha.end() && it->second == sha, absl::StrCat("acked dataset ", key.second, " missing"));
  }
  for (const auto& [job_id, tenant] : acked.jobs) {
    c.Expect(job_by_id.count(job_id) == 1, absl::StrCat("acked job ", job_id, " missing"));
  }
  for (const std::string& job_id : acked.cancelled) {
    auto it = job_by_id.find(job_id);
    c.Expect(it != job_by_id.end() && it->second->state == storage::JobState::kCancelled,
             absl::StrCat("acked cancel of ", job_id, " lost"));
  }
  for (const auto& [job_id, v] : acked.succeeded) {
    auto it = job_by_id.find(job_id);
    c.Expect(it != job_by_id.end() && it->second->state == storage::JobState::kSucceeded &&
                 it->second->result_version == std::optional<int64_t>(v),
             absl::StrCat("job ", job_id, " seen SUCCEEDED with version ", v, " is not"));
  }
  for (const auto& [key, sha] : acked.versions) {
    auto it = versions.find(key);
    c.Expect(it != versions.end() && it->second.sha256 == sha,
             absl::StrCat("seen version ", key.first, "/", key.second, " missing or changed"));
  }
  std::map<std::tuple<std::string, int64_t, int64_t>, int> rows;
  absl::StatusOr<std::vector<storage::Change>> changes = reg->ListChangesSince(0);
  if (!changes.ok()) Die(changes.status().ToString());
  for (const storage::Change& ch : *changes) {
    if (ch.kind != storage::ChangeKind::kPublish) ++rows[{ch.tenant_id, ch.previous_live, ch.live_version}];
  }
  for (const auto& [move, n] : acked.moves) {
    c.Expect(rows[move] >= n, absl::StrCat("acked live move of ", std::get<0>(move), " ", std::get<1>(move), " -> ",
                                           std::get<2>(move), " missing"));
  }
  std::map<std::string, std::string> running;
  for (const storage::Job& j : jobs) {
    if (j.state == storage::JobState::kRunning) running[j.job_id] = j.lease_owner;
  }
  return running;
}

// After a restart: the jobs the dead server held are no longer RUNNING under its lease.
void CheckRecovered(Checker& c, const std::map<std::string, std::string>& dead_running) {
  if (dead_running.empty()) return;
  const auto deadline = Clock::now() + std::chrono::seconds(3 * kLeaseSeconds + 10);
  std::vector<std::string> stuck;
  while (true) {
    stuck.clear();
    std::unique_ptr<storage::Registry> reg = OpenRegistry();
    for (const auto& [job_id, owner] : dead_running) {
      absl::StatusOr<storage::Job> j = reg->GetJob("", job_id);
      if (j.ok() && j->state == storage::JobState::kRunning && j->lease_owner == owner) stuck.push_back(job_id);
    }
    if (stuck.empty() || Clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (const auto& [job_id, owner] : dead_running) {
    c.Expect(std::find(stuck.begin(), stuck.end(), job_id) == stuck.end(),
             absl::StrCat("job ", job_id, " still RUNNING under the killed server's lease (", owner, ")"));
  }
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Die(absl::StrCat(a, " needs a value"));
      return argv[++i];
    };
    auto number = [&](int lo) -> int {
      const std::string v = next();
      int x = 0;
      if (!absl::SimpleAtoi(v, &x) || x < lo) Die(absl::StrCat(a, " needs an integer >= ", lo, ", got '", v, "'"));
      return x;
    };
    if (a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--kills") {
      f.kills = number(1);
    } else if (a == "--seed") {
      f.seed = static_cast<uint32_t>(number(0));
    } else if (a == "--server-bin") {
      f.server_bin = next();
    } else if (a == "--backbone") {
      f.backbone = next();
    } else if (a == "--tenants") {
      f.tenants = number(1);
    } else if (a == "--clients") {
      f.clients = number(1);
    } else if (a == "--min-run-ms") {
      f.min_run_ms = number(0);
    } else if (a == "--max-run-ms") {
      f.max_run_ms = number(1);
    } else if (a == "--max-open-jobs") {
      f.max_open_jobs = number(0);
    } else if (a == "--drain-seconds") {
      f.drain_seconds = number(0);
    } else if (a == "--keep-data-dir") {
      f.keep = true;
    } else {
      Die(absl::StrCat("unknown flag '", a, "' (see --help)"));
    }
  }
  if (f.max_run_ms < f.min_run_ms) Die("--max-run-ms must be >= --min-run-ms");
  if (f.server_bin.empty()) f.server_bin = SelfDir() + "/../../services/tessera-server";
  if (::access(f.server_bin.c_str(), X_OK) != 0) Die(absl::StrCat("tessera-server not found at ", f.server_bin, " (--server-bin)"));
  ::signal(SIGPIPE, SIG_IGN);
  char tmpl[] = "/tmp/tessera-chaos-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) Die("mkdtemp failed");
  g_root = tmpl;
  {
    // A small general-ability text for the promotion gate: the default (held-out pretraining documents)
    // costs about a second per job, and this test wants many jobs to reach their publish.
    std::ofstream general(g_root + "/general.jsonl");
    general << "{\"text\":\"the quick brown fox jumps over the lazy dog. add(1,2)=3\"}\n"
            << "{\"text\":\"a stitch in time saves nine; add(20,22)=42\"}\n";
  }
  std::mt19937 rng(f.seed);

  // Setup (no kill): tenants with a key and a dataset each.
  StartServer(f);
  std::string admin_key;
  {
    std::ifstream in(g_root + "/data/admin.key");
    std::getline(in, admin_key);
    admin_key = std::string(absl::StripAsciiWhitespace(admin_key));
    if (admin_key.empty()) Die("no admin.key after the first start");
  }
  Acked acked;
  std::vector<TenantInfo> tenants;
  {
    auto channel = Channel();
    auto admin = v1::Admin::NewStub(channel);
    auto datasets = v1::Datasets::NewStub(channel);
    for (int i = 0; i < f.tenants; ++i) {
      TenantInfo t;
      t.id = absl::StrCat("chaos", i);
      v1::CreateTenantRequest r;
      r.set_tenant_id(t.id);
      v1::CreateTenantResponse resp;
      grpc::Status s = admin->CreateTenant(Ctx(admin_key).get(), r, &resp);
      if (!s.ok()) Die(absl::StrCat("CreateTenant: ", s.error_message()));
      t.key = resp.api_key().secret();
      v1::Dataset ds;
      s = Upload(*datasets, t, DatasetBytes(i), &ds);
      if (!s.ok()) Die(absl::StrCat("UploadDataset: ", s.error_message()));
      t.dataset = ds.dataset_id();
      acked.tenants.insert(t.id);
      acked.datasets[{t.id, ds.dataset_id()}] = ds.sha256();
      acked.count += 2;
      tenants.push_back(t);
    }
  }

  Checker checker;
  Stats stats;
  std::map<std::string, std::string> dead_running;
  int kills_with_running_jobs = 0;  // kills that found a job RUNNING (training or publishing)
  const auto started = Clock::now();
  for (int kill = 1; kill <= f.kills; ++kill) {
    if (kill > 1) StartServer(f);
    checker.when = absl::StrCat("after restart ", kill - 1);
    CheckRecovered(checker, dead_running);
    std::atomic<bool> stop{false};
    std::vector<std::thread> clients;
    for (int i = 0; i < f.clients; ++i) {
      clients.emplace_back(Client, i, static_cast<uint32_t>(rng()), std::cref(tenants), admin_key, f.max_open_jobs,
                           &stop, &acked, &stats);
    }
    // One run in four lasts up to 3x longer, so jobs also get to finish (and publish) between kills on a
    // loaded machine; the rest land anywhere in [min, max].
    const int top = rng() % 4 == 0 ? 3 * f.max_run_ms : f.max_run_ms;
    const int run_ms = f.min_run_ms + static_cast<int>(rng() % (top - f.min_run_ms + 1));
    std::this_thread::sleep_for(std::chrono::milliseconds(run_ms));
    KillServer(SIGKILL);
    stop.store(true);
    for (std::thread& t : clients) t.join();
    checker.when = absl::StrCat("after kill ", kill);
    dead_running = CheckOffline(checker, acked);
    kills_with_running_jobs += !dead_running.empty();
    if (kill % 10 == 0 || kill == f.kills) {
      std::printf("kill %d/%d: %lld checks, %lld failures, %lld acked, %lld generates ok, %.0f s\n", kill, f.kills,
                  static_cast<long long>(checker.checks), static_cast<long long>(checker.failures),
                  static_cast<long long>(acked.count), static_cast<long long>(stats.generates_ok.load()),
                  std::chrono::duration<double>(Clock::now() - started).count());
      std::fflush(stdout);
    }
  }

  // Drain: one more start, every job to a terminal state, a clean stop, the checks once more.
  StartServer(f);
  checker.when = "final restart";
  CheckRecovered(checker, dead_running);
  const auto drain_deadline = Clock::now() + std::chrono::seconds(f.drain_seconds);
  int64_t unfinished = 0;
  while (true) {
    std::unique_ptr<storage::Registry> reg = OpenRegistry();
    unfinished = 0;
    for (const storage::Job& j : AllJobs(*reg)) unfinished += !storage::IsTerminal(j.state);
    if (unfinished == 0 || Clock::now() > drain_deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  checker.when = "drain";
  checker.Expect(unfinished == 0, absl::StrCat(unfinished, " jobs unfinished ", f.drain_seconds, " s after the last restart"));
  KillServer(SIGTERM);
  checker.when = "final";
  CheckOffline(checker, acked);

  int64_t versions = 0, succeeded = 0;
  {
    std::unique_ptr<storage::Registry> reg = OpenRegistry();
    for (const TenantInfo& t : tenants) versions += static_cast<int64_t>(reg->ListVersions(t.id).value_or(std::vector<storage::ExpertVersion>()).size());
    for (const storage::Job& j : AllJobs(*reg)) succeeded += j.state == storage::JobState::kSucceeded;
  }
  std::printf("kills=%d kills_with_running_jobs=%d invariant_checks=%lld failures=%lld distinct_violations=%zu "
              "acked_mutations=%lld versions=%lld jobs_succeeded=%lld generates_ok=%lld\n",
              f.kills, kills_with_running_jobs, static_cast<long long>(checker.checks),
              static_cast<long long>(checker.failures),
              checker.distinct.size(),
              static_cast<long long>(acked.count), static_cast<long long>(versions),
              static_cast<long long>(succeeded), static_cast<long long>(stats.generates_ok.load()));
  if (f.keep || checker.failures > 0) {
    std::fprintf(stderr, "tessera-chaos: data in %s\n", g_root.c_str());
  } else {
    std::error_code ec;
    std::filesystem::remove_all(g_root, ec);
  }
  return checker.failures == 0 ? 0 : 1;
}
