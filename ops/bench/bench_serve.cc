// bench_serve: a gRPC load generator for tessera-server, through the public tessera.v1 API only.
//
// Measures, against a real server on loopback:
//   1. Generate requests/s and p50/p99 latency with 1, 8 and 64 tenants mixed in one load (request i
//      goes to tenant i mod n), each tenant served by its own live expert version, from K client
//      threads (one channel each), greedy, small max_tokens. Every response's expert_version is
//      checked against the tenant's live version.
//   2. promote->served: Admin.Promote's own latency, and the time from Promote returning to the first
//      Generate response that reports the new expert_version (the contract says the very first request
//      after the return is served by it, so this is one small Generate; a stale answer is a violation).
//   3. FineTuning.GetJob calls/s from concurrent clients.
//   4. (with --train-load-steps N) serving while a fine-tune job trains on the same server/device:
//      Generate latency (p50/p99/max) during the job against the same load without it, and the job's
//      step time, so "no serving stall longer than one training step" can be read off.
// Each tenant count's requests are split over interleaved rounds (1,8,64,1,8,64,...) so drift in a
// shared machine's load hits every count alike. When the bench started the server it also reports the
// server's CPU time per request (from /proc/<pid>/stat), which other processes' load disturbs far less
// than wall-clock throughput.
//
// Setup is done through the API as a client would: Admin.CreateTenant (each tenant gets its own key),
// Datasets.UploadDataset of a small JSONL set, FineTuning.CreateJob with explicit slots and a few steps
// (auto_promote), then Admin.Promote of the job's result when auto-promotion declined it (its
// validation loss did not beat the base on a 2-step run). Nothing is written behind the server's back.
//
// By default the bench starts its own tessera-server (127.0.0.1, a free port, a temporary data dir)
// and stops it on every exit path (normal end, failure, SIGINT/SIGTERM; the child also gets SIGTERM
// through PR_SET_PDEATHSIG if this process dies). With --server HOST:PORT --admin-key-file F it targets
// a running server instead (it then creates tenants named <prefix>-<i>; use a fresh --tenant-prefix).
//
// Any failed RPC, failed job or wrongly versioned response ends the run with exit status 1 and a
// one-line reason on stderr. The last stdout line is exactly
//   gen_rps_1=<x> gen_rps_64=<x> ratio=<x> swap_p50_ms=<x> getjob_rps=<x>
//
// With --many-tenants LIST it runs only the overlay-tier benchmark instead (issue 20, section 3; see
// RunManyTenants below): thousands of registered tenants, Zipf traffic, device and host overlay
// budgets far below the total. Its last stdout line is exactly
//   tiers_rps_1=<x> tiers_rps_1000=<x> hot_p99_alone_ms=<x> hot_p99_1000_ms=<x> hot_p99_ratio=<x>
//   cpu_ratio_1000=<x> ratio_1000=<x>
// (one line), ratio_1000 = req/s with 1,000 active tenants over req/s with one, cpu_ratio_1000 the same
// from the server's CPU time per request (steadier on a shared machine).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/model/config.h"
#include "core/model/lora_overlay.h"
#include "grpcpp/grpcpp.h"
#include "storage/registry.h"
#include "tessera/v1/admin.grpc.pb.h"
#include "tessera/v1/datasets.grpc.pb.h"
#include "tessera/v1/experts.grpc.pb.h"
#include "tessera/v1/fine_tuning.grpc.pb.h"
#include "tessera/v1/inference.grpc.pb.h"

namespace {

namespace v1 = tessera::v1;
using Clock = std::chrono::steady_clock;

constexpr char kUsage[] = R"(bench_serve: load generator for tessera-server (tessera.v1 over gRPC).

Usage: bench_serve [options]

Server (default: start one):
  --server-bin PATH        tessera-server to start (default: next to this binary in the build tree,
                           ../../services/tessera-server, or ./tessera-server beside it)
  --backbone SPEC          backbone for the started server (default random:tiny: the builtin:tiny
                           architecture with fixed random weights; timings do not depend on weights)
  --device cpu|cuda        device for the started server (default cpu)
  --max-concurrent-jobs N  setup fine-tuning jobs run at once (default 2)
  --keep-data-dir          do not delete the temporary data dir (its path is printed)
  --server HOST:PORT       target a running server instead (needs --admin-key-file)
  --admin-key-file FILE    the ADMIN key for --server
  --tenant-prefix P        tenant ids are P-<i> (default bench)

Load:
  --tenants LIST           tenant counts of the Generate phases (default 1,8,64; must include 1 and 64
                           for the final line's ratio)
  --threads K              concurrent client threads, one channel each (default 8)
  --requests N             timed Generate requests per tenant count (default 2000)
  --duration S             cap on the timed Generate time per tenant count, seconds (default 20)
  --rounds R               split each tenant count's requests over R interleaved rounds
                           (1,8,64,1,8,64,...) so drift in machine load hits all counts alike (default 8)
  --max-tokens N           Generate max_tokens (default 16; greedy)
  --flips N                promote flips for promote->served (default 20)
  --swap-load-threads N    client threads generating for the other tenants during the flips
                           (default 0: an idle server, so the number is the swap path alone)
  --getjob-requests N      GetJob calls (default 20000)
  --getjob-duration S      cap on the GetJob phase, seconds (default 8)
  --train-steps N          steps of each setup fine-tune job (default 2)
  --train-load-steps N     phase 4: a fine-tune job of N steps (batch 16 x 64 tokens) for tenant 0,
                           and 10 s of Generate load over up to 8 tenants while it runs, compared with
                           the same load without it (default 0: skip the phase)
  --setup-timeout S        cap on tenant setup (jobs), seconds (default 600)
  --help                   this text

Overlay tiers (--many-tenants LIST runs only this benchmark; it starts its own server):
  --many-tenants LIST      active tenant counts, e.g. 1,64,1000,5000 (the largest are registered
                           before the server starts, each with one live LoRA version; include 1 and 1000
                           for the final line's ratios)
  --zipf S                 Zipf exponent of the traffic over the active tenants (default 1.0)
  --device-overlays N      overlay device tier, in tenants' overlays (default 32)
  --host-overlays N        overlay host tier, in tenants' overlays (default 256)
  --hot-tenants N          the hottest N tenants, whose p99 is reported; also a phase of their own
                           (no cold loads) for comparison (default 4)
  --lora-rank R            rank of the registered LoRA versions (default 4)
  (--threads, --requests, --duration, --rounds, --max-tokens, --backbone apply; --requests default
  2000 per tenant count)

Exit status 0 when every request succeeded and was served by the expected version, 1 otherwise.
)";

// ---------------------------------------------------------------------------------------------------
// The server child and cleanup on every exit path.

std::atomic<pid_t> g_server_pid{0};
std::string g_temp_root;  // removed at exit unless --keep-data-dir
bool g_keep_dir = false;
std::atomic<bool> g_interrupted{false};  // set by the signal thread; failures after it are its doing

void StopServer() {
  pid_t pid = g_server_pid.exchange(0);
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  // A clean shutdown finishes in well under 10 s; after that it is killed.
  for (int i = 0; i < 200; ++i) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return;
    ::usleep(50 * 1000);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

void Cleanup() {
  static std::mutex mu;  // the signal thread and the main thread may both get here
  std::lock_guard<std::mutex> lock(mu);
  StopServer();
  if (!g_temp_root.empty()) {
    if (g_keep_dir) {
      std::fprintf(stderr, "bench_serve: kept %s\n", g_temp_root.c_str());
    } else {
      std::error_code ec;
      std::filesystem::remove_all(g_temp_root, ec);
    }
    g_temp_root.clear();
  }
}

// SIGINT/SIGTERM are blocked in every thread and taken here, so the full cleanup (stop the server,
// remove the temporary dir) runs as ordinary code, not in a signal handler.
void StartSignalThread() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    int sig = 0;
    sigwait(&set, &sig);
    g_interrupted = true;
    std::fprintf(stderr, "bench_serve: interrupted (%s); stopping the server\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    Cleanup();
    std::_Exit(128 + sig);
  }).detach();
}

[[noreturn]] void Die(const std::string& msg) {
  // Requests fail once the signal thread has stopped the server; it reports and exits.
  while (g_interrupted.load()) std::this_thread::sleep_for(std::chrono::seconds(1));
  std::fflush(stdout);
  std::fprintf(stderr, "bench_serve: FAILED: %s\n", msg.c_str());
  if (pid_t pid = g_server_pid.load(); pid > 0) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      g_server_pid = 0;
      std::fprintf(stderr, "bench_serve: tessera-server had died (%s %d)\n",
                   WIFSIGNALED(status) ? "signal" : "exit status",
                   WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    }
  }
  if (!g_temp_root.empty()) {
    // The server's last log lines usually say why.
    std::ifstream log(g_temp_root + "/server.log");
    std::vector<std::string> lines;
    for (std::string l; std::getline(log, l);) lines.push_back(l);
    size_t from = lines.size() > 5 ? lines.size() - 5 : 0;
    for (size_t i = from; i < lines.size(); ++i) std::fprintf(stderr, "  server.log: %s\n", lines[i].c_str());
  }
  Cleanup();
  std::exit(1);
}

std::string StatusText(const grpc::Status& s) {
  return absl::StrCat("code ", static_cast<int>(s.error_code()), " (", s.error_message(), ")");
}

void Check(const grpc::Status& s, const std::string& what) {
  if (!s.ok()) Die(absl::StrCat(what, ": ", StatusText(s)));
}

std::string SelfDir() {
  std::error_code ec;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : self.parent_path().string();
}

std::string FindServerBin(const std::string& flag) {
  if (!flag.empty()) {
    if (::access(flag.c_str(), X_OK) != 0) Die(absl::StrCat("--server-bin ", flag, ": not an executable file"));
    return flag;
  }
  std::string dir = SelfDir();
  for (const std::string& c : {dir + "/../../services/tessera-server", dir + "/tessera-server"}) {
    if (::access(c.c_str(), X_OK) == 0) return std::filesystem::weakly_canonical(c).string();
  }
  Die(absl::StrCat("tessera-server not found next to ", dir,
                   " (build the tessera-server target, or pass --server-bin PATH)"));
}

// Starts tessera-server on 127.0.0.1:0 and returns its port (read from its stdout banner).
int StartServer(const std::string& bin, const std::string& data_dir, const std::vector<std::string>& extra) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) Die(absl::StrCat("pipe: ", std::strerror(errno)));
  std::string log_path = g_temp_root + "/server.log";
  std::vector<std::string> args = {bin, "--data-dir", data_dir, "--listen", "127.0.0.1:0"};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) Die(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);  // the bench's blocked SIGINT/SIGTERM are not the server's
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);
    int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (log < 0 || ::dup2(out[1], STDOUT_FILENO) < 0 || ::dup2(log, STDERR_FILENO) < 0) ::_exit(127);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  g_server_pid = pid;
  ::close(out[1]);
  // Read the banner "tessera-server listening on port N" (the admin key line may come first).
  std::string buf;
  auto deadline = Clock::now() + std::chrono::seconds(120);
  while (Clock::now() < deadline) {
    size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      std::string line = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      constexpr std::string_view kBanner = "listening on port ";
      if (size_t at = line.find(kBanner); at != std::string::npos) {
        int port = 0;
        std::string rest = line.substr(at + kBanner.size());
        rest = rest.substr(0, rest.find_first_not_of("0123456789"));
        // The read end stays open (never read again) so a later stdout line cannot SIGPIPE the server.
        if (absl::SimpleAtoi(rest, &port) && port > 0) return port;
      }
    }
    char chunk[512];
    pollfd pfd{out[0], POLLIN, 0};
    ssize_t n = 0;
    if (::poll(&pfd, 1, 200) > 0) n = ::read(out[0], chunk, sizeof(chunk));
    if (n > 0) {
      buf.append(chunk, n);
      continue;
    }
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      g_server_pid = 0;
      std::ifstream log(log_path);
      std::string all((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
      Die(absl::StrCat("tessera-server exited during startup (",
                       WIFEXITED(status) ? absl::StrCat("exit status ", WEXITSTATUS(status))
                                         : absl::StrCat("signal ", WTERMSIG(status)),
                       "): ", absl::StripAsciiWhitespace(all)));
    }
    if (n < 0 && errno != EINTR) Die(absl::StrCat("reading the server's stdout: ", std::strerror(errno)));
    if (n == 0) ::usleep(20 * 1000);
  }
  Die("tessera-server did not print its port within 120 s");
}

// ---------------------------------------------------------------------------------------------------
// Clients.

std::shared_ptr<grpc::Channel> NewChannel(const std::string& target) {
  grpc::ChannelArguments args;
  // A connection of its own per client thread (gRPC would otherwise share one subchannel).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

void Prepare(grpc::ClientContext* ctx, const std::string& key, int seconds = 120) {
  ctx->AddMetadata("authorization", "Bearer " + key);
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
}

struct Tenant {
  std::string id;
  std::string key;
  std::string dataset_id;
  std::string job_id;
  int64_t live = 0;  // the version Generate must report
};

double Millis(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * v.size()));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

std::string Dataset(int n, int seed) {
  // Addition examples as prompt/completion pairs, deterministic per tenant.
  std::string out;
  uint64_t s = 0x9e3779b97f4a7c15ull * (seed + 1);
  for (int i = 0; i < n; ++i) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    int a = static_cast<int>(s % 100), b = static_cast<int>((s >> 20) % 100);
    absl::StrAppend(&out, "{\"prompt\": \"add(", a, ",", b, ")=\", \"completion\": \"", a + b, "\"}\n");
  }
  return out;
}

struct Options {
  std::string server, admin_key_file, server_bin, backbone = "random:tiny", device = "cpu";
  std::string prefix = "bench";
  bool keep = false;
  int max_jobs = 2;
  std::vector<int> tenants = {1, 8, 64};
  int threads = 8, requests = 2000, duration_s = 20, rounds = 8, max_tokens = 16, flips = 20;
  int swap_load_threads = 0;
  int getjob_requests = 20000, getjob_duration_s = 8, train_steps = 2, setup_timeout_s = 600;
  int train_load_steps = 0;
  std::vector<int> many_tenants;  // --many-tenants: the overlay-tier benchmark
  double zipf_s = 1.0;
  int device_overlays = 32, host_overlays = 256, hot_tenants = 4, lora_rank = 4;
};

Options ParseFlags(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    bool inline_value = false;
    if (size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg.resize(eq);
      inline_value = true;
    }
    auto str = [&]() -> std::string {
      if (inline_value) return value;
      if (i + 1 >= argc) Die(absl::StrCat(arg, " needs a value"));
      return argv[++i];
    };
    auto num = [&](int lo) -> int {
      std::string v = str();
      int n = 0;
      if (!absl::SimpleAtoi(v, &n) || n < lo) Die(absl::StrCat(arg, ": expected an integer >= ", lo, ", got \"", v, "\""));
      return n;
    };
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (arg == "--server") {
      o.server = str();
    } else if (arg == "--admin-key-file") {
      o.admin_key_file = str();
    } else if (arg == "--server-bin") {
      o.server_bin = str();
    } else if (arg == "--backbone") {
      o.backbone = str();
    } else if (arg == "--device") {
      o.device = str();
    } else if (arg == "--max-concurrent-jobs") {
      o.max_jobs = num(1);
    } else if (arg == "--keep-data-dir") {
      o.keep = true;
    } else if (arg == "--tenant-prefix") {
      o.prefix = str();
    } else if (arg == "--tenants") {
      o.tenants.clear();
      for (absl::string_view part : absl::StrSplit(str(), ',')) {
        int n = 0;
        if (!absl::SimpleAtoi(part, &n) || n < 1) Die(absl::StrCat("--tenants: bad count \"", part, "\""));
        o.tenants.push_back(n);
      }
    } else if (arg == "--threads") {
      o.threads = num(1);
    } else if (arg == "--requests") {
      o.requests = num(1);
    } else if (arg == "--duration") {
      o.duration_s = num(1);
    } else if (arg == "--rounds") {
      o.rounds = num(1);
    } else if (arg == "--max-tokens") {
      o.max_tokens = num(1);
    } else if (arg == "--flips") {
      o.flips = num(1);
    } else if (arg == "--getjob-requests") {
      o.getjob_requests = num(1);
    } else if (arg == "--swap-load-threads") {
      o.swap_load_threads = num(0);
    } else if (arg == "--getjob-duration") {
      o.getjob_duration_s = num(1);
    } else if (arg == "--train-steps") {
      o.train_steps = num(1);
    } else if (arg == "--setup-timeout") {
      o.setup_timeout_s = num(1);
    } else if (arg == "--train-load-steps") {
      o.train_load_steps = num(0);
    } else if (arg == "--many-tenants") {
      for (absl::string_view part : absl::StrSplit(str(), ',')) {
        int n = 0;
        if (!absl::SimpleAtoi(part, &n) || n < 1) Die(absl::StrCat("--many-tenants: bad count \"", part, "\""));
        o.many_tenants.push_back(n);
      }
    } else if (arg == "--zipf") {
      std::string v = str();
      if (!absl::SimpleAtod(v, &o.zipf_s) || o.zipf_s < 0) Die(absl::StrCat("--zipf: expected a number >= 0, got \"", v, "\""));
    } else if (arg == "--device-overlays") {
      o.device_overlays = num(1);
    } else if (arg == "--host-overlays") {
      o.host_overlays = num(0);
    } else if (arg == "--hot-tenants") {
      o.hot_tenants = num(1);
    } else if (arg == "--lora-rank") {
      o.lora_rank = num(1);
    } else {
      Die(absl::StrCat("unknown argument \"", argv[i], "\" (see --help)"));
    }
  }
  if (!o.server.empty() && o.admin_key_file.empty()) Die("--server needs --admin-key-file");
  o.rounds = std::min(o.rounds, o.requests);  // every round runs at least one request
  return o;
}

std::string ReadKey(const std::string& path) {
  std::ifstream in(path);
  if (!in) Die(absl::StrCat("cannot read the admin key file ", path));
  std::string key;
  std::getline(in, key);
  key = std::string(absl::StripAsciiWhitespace(key));
  if (key.empty()) Die(absl::StrCat("the admin key file ", path, " is empty"));
  return key;
}

// ---------------------------------------------------------------------------------------------------
// Setup: tenants, datasets, fine-tune jobs, live versions.

// A fine-tune job request of `steps` steps on the tenant's bench dataset (slots are the caller's).
v1::CreateJobRequest JobRequest(const Tenant& t, int steps, int batch, int seq_len, double lr) {
  v1::CreateJobRequest req;
  req.set_tenant_id(t.id);
  req.set_training_dataset_id(t.dataset_id);
  auto* hp = req.mutable_hyperparameters();
  hp->set_max_steps(steps);
  hp->set_batch_size(batch);
  hp->set_seq_len(seq_len);
  hp->set_learning_rate(lr);
  hp->set_warmup_steps(0);
  return req;
}

void SetupTenants(const Options& o, const std::string& target, const std::string& admin_key,
                  const v1::BackboneInfo& backbone, std::vector<Tenant>* tenants) {
  auto channel = NewChannel(target);
  auto admin = v1::Admin::NewStub(channel);
  auto datasets = v1::Datasets::NewStub(channel);
  auto ft = v1::FineTuning::NewStub(channel);
  const int layers = std::max(1, backbone.num_layers()), experts = std::max(1, backbone.num_experts());
  for (size_t i = 0; i < tenants->size(); ++i) {
    Tenant& t = (*tenants)[i];
    {
      grpc::ClientContext ctx;
      Prepare(&ctx, admin_key);
      v1::CreateTenantRequest req;
      req.set_tenant_id(t.id);
      req.set_display_name(absl::StrCat("bench tenant ", i));
      v1::CreateTenantResponse resp;
      Check(admin->CreateTenant(&ctx, req, &resp), "Admin.CreateTenant " + t.id);
      t.key = resp.api_key().secret();
      if (t.key.empty()) Die("Admin.CreateTenant returned no api_key.secret for " + t.id);
    }
    {
      grpc::ClientContext ctx;
      Prepare(&ctx, t.key);
      v1::Dataset ds;
      auto writer = datasets->UploadDataset(&ctx, &ds);
      v1::UploadDatasetRequest first;
      first.set_tenant_id(t.id);
      first.set_name("bench");
      first.set_format("jsonl");
      v1::UploadDatasetRequest body;
      body.set_chunk(Dataset(32, static_cast<int>(i)));
      if (!writer->Write(first) || !writer->Write(body)) {
        // The server ended the stream early; Finish carries its status.
      }
      writer->WritesDone();
      Check(writer->Finish(), "Datasets.UploadDataset for " + t.id);
      t.dataset_id = ds.dataset_id();
    }
    {
      grpc::ClientContext ctx;
      Prepare(&ctx, t.key);
      v1::CreateJobRequest req = JobRequest(t, o.train_steps, 4, 32, 0.01);
      req.mutable_hyperparameters()->set_seed(i);
      // Two slots per tenant, spread over layers and experts, so tenants' overlays differ.
      auto* sel = req.mutable_expert_selection()->mutable_explicit_();
      int l0 = static_cast<int>(i % layers), e0 = static_cast<int>(i % experts);
      int l1 = static_cast<int>((i + 1) % layers), e1 = static_cast<int>((i * 7 + 3) % experts);
      if (l1 == l0 && e1 == e0) e1 = (e0 + 1) % experts;
      auto* s0 = sel->add_slots();
      s0->set_layer(l0);
      s0->set_expert(e0);
      if (!(l1 == l0 && e1 == e0)) {
        auto* s1 = sel->add_slots();
        s1->set_layer(l1);
        s1->set_expert(e1);
      }
      req.set_auto_promote(true);
      req.set_idempotency_key(absl::StrCat("bench-setup-", t.id));
      v1::Job job;
      Check(ft->CreateJob(&ctx, req, &job), "FineTuning.CreateJob for " + t.id);
      t.job_id = job.job_id();
    }
  }
  // Wait for every job; a version auto-promotion declined is promoted explicitly.
  auto deadline = Clock::now() + std::chrono::seconds(o.setup_timeout_s);
  size_t done = 0;
  std::vector<bool> finished(tenants->size(), false);
  auto last_report = Clock::now();
  while (done < tenants->size()) {
    if (Clock::now() > deadline) {
      Die(absl::StrCat("setup: only ", done, " of ", tenants->size(), " fine-tune jobs finished within ",
                       o.setup_timeout_s, " s (--setup-timeout)"));
    }
    for (size_t i = 0; i < tenants->size(); ++i) {
      if (finished[i]) continue;
      Tenant& t = (*tenants)[i];
      grpc::ClientContext ctx;
      Prepare(&ctx, t.key);
      v1::GetJobRequest req;
      req.set_tenant_id(t.id);
      req.set_job_id(t.job_id);
      v1::Job job;
      Check(ft->GetJob(&ctx, req, &job), "FineTuning.GetJob " + t.job_id);
      if (job.state() == v1::FAILED || job.state() == v1::CANCELLED) {
        Die(absl::StrCat("setup job ", t.job_id, " of ", t.id, " ended ", v1::JobState_Name(job.state()), ": ",
                         job.error()));
      }
      if (job.state() != v1::SUCCEEDED) continue;
      if (!job.has_result_version()) Die(absl::StrCat("job ", t.job_id, " SUCCEEDED without result_version"));
      if (!job.promoted()) {
        grpc::ClientContext pctx;
        Prepare(&pctx, admin_key);
        v1::PromoteRequest p;
        p.set_tenant_id(t.id);
        p.set_version(job.result_version());
        v1::LiveVersionResponse r;
        Check(admin->Promote(&pctx, p, &r), "Admin.Promote " + t.id);
      }
      t.live = job.result_version();
      finished[i] = true;
      ++done;
    }
    if (Clock::now() - last_report > std::chrono::seconds(10)) {
      std::printf("  setup: %zu/%zu fine-tune jobs done\n", done, tenants->size());
      std::fflush(stdout);
      last_report = Clock::now();
    }
    if (done < tenants->size()) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

// ---------------------------------------------------------------------------------------------------
// Phases.

struct PhaseResult {
  int tenants = 0;
  std::vector<double> latencies_ms;
  int64_t requests = 0;
  int64_t tokens = 0;
  double seconds = 0, rps = 0, tok_s = 0, p50 = 0, p99 = 0;
  double server_cpu_s = -1;  // the started server's user+system CPU time over the phase (-1: unknown)
};

// User+system CPU seconds of the started server so far (-1 when the bench did not start it). On a
// shared machine this is steadier than wall time: other processes' load changes it much less.
double ServerCpuSeconds() {
  pid_t pid = g_server_pid.load();
  if (pid <= 0) return -1;
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return -1;
  std::vector<std::string> f = absl::StrSplit(stat.substr(paren + 2), ' ');
  // After "pid (comm) ": state is field 3, utime field 14, stime field 15 (1-based over the whole line).
  int64_t utime = 0, stime = 0;
  if (f.size() < 13 || !absl::SimpleAtoi(f[11], &utime) || !absl::SimpleAtoi(f[12], &stime)) return -1;
  return static_cast<double>(utime + stime) / ::sysconf(_SC_CLK_TCK);
}

const char* kPrompts[] = {"add(12,34)=", "add(7,58)=", "add(40,40)=", "add(3,91)="};

// Runs `total` Generate requests (or until the cap) from `threads` clients over tenants[0, n).
PhaseResult RunGenerate(const Options& o, const std::string& target, const std::vector<Tenant>& tenants, int n,
                        int total, int cap_s) {
  std::atomic<int64_t> next{0};
  std::mutex mu;
  std::string first_error;
  std::vector<double> latencies;
  std::atomic<int64_t> tokens{0};
  const double cpu0 = ServerCpuSeconds();
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::seconds(cap_s);
  std::vector<std::thread> workers;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int w = 0; w < o.threads; ++w) channels.push_back(NewChannel(target));
  for (int w = 0; w < o.threads; ++w) {
    workers.emplace_back([&, w] {
      auto stub = v1::Inference::NewStub(channels[w]);
      std::vector<double> mine;
      while (true) {
        int64_t i = next.fetch_add(1);
        if (i >= total || Clock::now() > deadline) break;
        {
          std::lock_guard<std::mutex> l(mu);
          if (!first_error.empty()) break;
        }
        const Tenant& t = tenants[i % n];
        v1::GenerateRequest req;
        req.set_tenant_id(t.id);
        req.set_prompt(kPrompts[i % 4]);
        req.set_max_tokens(o.max_tokens);
        req.set_temperature(0);
        v1::GenerateResponse resp;
        grpc::ClientContext ctx;
        Prepare(&ctx, t.key);
        auto t0 = Clock::now();
        grpc::Status s = stub->Generate(&ctx, req, &resp);
        double ms = Millis(Clock::now() - t0);
        std::string err;
        if (!s.ok()) {
          err = absl::StrCat("Inference.Generate for ", t.id, ": ", StatusText(s));
        } else if (resp.expert_version() != t.live) {
          err = absl::StrCat("Inference.Generate for ", t.id, " was served by version ", resp.expert_version(),
                             ", but its live version is ", t.live);
        }
        if (!err.empty()) {
          std::lock_guard<std::mutex> l(mu);
          if (first_error.empty()) first_error = err;
          break;
        }
        tokens += resp.usage().completion_tokens();
        mine.push_back(ms);
      }
      std::lock_guard<std::mutex> l(mu);
      latencies.insert(latencies.end(), mine.begin(), mine.end());
    });
  }
  for (auto& w : workers) w.join();
  if (!first_error.empty()) Die(first_error);
  PhaseResult r;
  r.tenants = n;
  r.requests = static_cast<int64_t>(latencies.size());
  r.tokens = tokens.load();
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (double cpu1 = ServerCpuSeconds(); cpu0 >= 0 && cpu1 >= 0) r.server_cpu_s = cpu1 - cpu0;
  r.rps = r.requests / r.seconds;
  r.tok_s = r.tokens / r.seconds;
  r.p50 = Percentile(latencies, 50);
  r.p99 = Percentile(latencies, 99);
  r.latencies_ms = std::move(latencies);
  return r;
}

// Folds one round into a tenant count's running total.
void Accumulate(const PhaseResult& round, PhaseResult* total) {
  total->tenants = round.tenants;
  total->requests += round.requests;
  total->tokens += round.tokens;
  total->seconds += round.seconds;
  total->server_cpu_s = round.server_cpu_s < 0 ? -1 : std::max(0.0, total->server_cpu_s) + round.server_cpu_s;
  total->latencies_ms.insert(total->latencies_ms.end(), round.latencies_ms.begin(), round.latencies_ms.end());
  total->rps = total->requests / total->seconds;
  total->tok_s = total->tokens / total->seconds;
  total->p50 = Percentile(total->latencies_ms, 50);
  total->p99 = Percentile(total->latencies_ms, 99);
}

struct SwapResult {
  int64_t trained = 0;  // flipped between this version and the base
  std::vector<double> promote_ms, served_ms;
  int64_t stale = 0;  // responses after Promote returned that still reported the old version
};

SwapResult RunSwaps(const Options& o, const std::string& target, const std::string& admin_key, Tenant& t) {
  auto channel = NewChannel(target);
  auto admin = v1::Admin::NewStub(channel);
  auto inference = v1::Inference::NewStub(NewChannel(target));
  const int64_t trained = t.live;
  SwapResult r;
  r.trained = trained;
  for (int f = 0; f < o.flips; ++f) {
    const int64_t to = (t.live == trained) ? 0 : trained;  // alternate the trained version and the base
    grpc::ClientContext pctx;
    Prepare(&pctx, admin_key);
    v1::PromoteRequest p;
    p.set_tenant_id(t.id);
    p.set_version(to);
    v1::LiveVersionResponse lr;
    auto t0 = Clock::now();
    Check(admin->Promote(&pctx, p, &lr), absl::StrCat("Admin.Promote ", t.id, " to ", to));
    auto t1 = Clock::now();
    if (lr.live_version() != to) {
      Die(absl::StrCat("Admin.Promote ", t.id, " to ", to, " returned live_version ", lr.live_version()));
    }
    t.live = to;
    r.promote_ms.push_back(Millis(t1 - t0));
    for (int attempt = 0;; ++attempt) {
      if (attempt == 100) Die(absl::StrCat("version ", to, " of ", t.id, " not served 100 requests after Promote"));
      grpc::ClientContext ctx;
      Prepare(&ctx, t.key);
      v1::GenerateRequest req;
      req.set_tenant_id(t.id);
      req.set_prompt(kPrompts[f % 4]);
      req.set_max_tokens(1);
      v1::GenerateResponse resp;
      Check(inference->Generate(&ctx, req, &resp), "Inference.Generate after Promote for " + t.id);
      if (resp.expert_version() == to) {
        r.served_ms.push_back(Millis(Clock::now() - t1));
        break;
      }
      ++r.stale;
    }
  }
  return r;
}

struct GetJobResult {
  int64_t calls = 0;
  double seconds = 0, rps = 0, p50 = 0, p99 = 0;
  double server_cpu_s = -1;
};

GetJobResult RunGetJob(const Options& o, const std::string& target, const std::vector<Tenant>& tenants) {
  std::atomic<int64_t> next{0};
  std::mutex mu;
  std::string first_error;
  std::vector<double> latencies;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int w = 0; w < o.threads; ++w) channels.push_back(NewChannel(target));
  const double cpu0 = ServerCpuSeconds();
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::seconds(o.getjob_duration_s);
  std::vector<std::thread> workers;
  for (int w = 0; w < o.threads; ++w) {
    workers.emplace_back([&, w] {
      auto stub = v1::FineTuning::NewStub(channels[w]);
      std::vector<double> mine;
      mine.reserve(o.getjob_requests / o.threads + 1);
      while (true) {
        int64_t i = next.fetch_add(1);
        if (i >= o.getjob_requests || Clock::now() > deadline) break;
        const Tenant& t = tenants[i % tenants.size()];
        v1::GetJobRequest req;
        req.set_tenant_id(t.id);
        req.set_job_id(t.job_id);
        v1::Job job;
        grpc::ClientContext ctx;
        Prepare(&ctx, t.key, 30);
        auto t0 = Clock::now();
        grpc::Status s = stub->GetJob(&ctx, req, &job);
        mine.push_back(Millis(Clock::now() - t0));
        std::string err;
        if (!s.ok()) err = absl::StrCat("FineTuning.GetJob ", t.job_id, ": ", StatusText(s));
        else if (job.job_id() != t.job_id) err = absl::StrCat("FineTuning.GetJob returned job ", job.job_id());
        if (!err.empty()) {
          std::lock_guard<std::mutex> l(mu);
          if (first_error.empty()) first_error = err;
          break;
        }
      }
      std::lock_guard<std::mutex> l(mu);
      latencies.insert(latencies.end(), mine.begin(), mine.end());
    });
  }
  for (auto& w : workers) w.join();
  if (!first_error.empty()) Die(first_error);
  GetJobResult r;
  r.calls = static_cast<int64_t>(latencies.size());
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (double cpu1 = ServerCpuSeconds(); cpu0 >= 0 && cpu1 >= 0) r.server_cpu_s = cpu1 - cpu0;
  r.rps = r.calls / r.seconds;
  r.p50 = Percentile(latencies, 50);
  r.p99 = Percentile(latencies, 99);
  return r;
}

}  // namespace

// Phase 4: Generate load while a fine-tune job trains, against the same load without it.
struct TrainLoadResult {
  PhaseResult idle, training;
  double step_ms = 0;      // the job's training step time while the load ran (from its progress)
  int64_t steps_during = 0;
  double max_idle_ms = 0, max_training_ms = 0;
};

v1::Job GetJobOf(v1::FineTuning::Stub* ft, const Tenant& t, const std::string& job_id) {
  grpc::ClientContext ctx;
  Prepare(&ctx, t.key);
  v1::GetJobRequest req;
  req.set_tenant_id(t.id);
  req.set_job_id(job_id);
  v1::Job job;
  Check(ft->GetJob(&ctx, req, &job), "FineTuning.GetJob " + job_id);
  return job;
}

TrainLoadResult RunTrainLoad(const Options& o, const std::string& target, const std::vector<Tenant>& tenants) {
  const int n = static_cast<int>(std::min<size_t>(8, tenants.size()));
  const int kSeconds = 10, kBatch = 16, kSeqLen = 64;
  TrainLoadResult r;
  RunGenerate(o, target, tenants, n, o.threads, 60);  // warm
  r.idle = RunGenerate(o, target, tenants, n, 1 << 30, kSeconds);

  auto ft = v1::FineTuning::NewStub(NewChannel(target));
  const Tenant& t = tenants[0];
  v1::Job job;
  {
    grpc::ClientContext ctx;
    Prepare(&ctx, t.key);
    v1::CreateJobRequest req = JobRequest(t, o.train_load_steps, kBatch, kSeqLen, 0.001);
    auto* slot = req.mutable_expert_selection()->mutable_explicit_()->add_slots();
    slot->set_layer(0);
    slot->set_expert(0);
    req.set_auto_promote(false);  // the live versions the load checks must not move
    req.set_idempotency_key(absl::StrCat("bench-train-load-", ::getpid()));
    Check(ft->CreateJob(&ctx, req, &job), "FineTuning.CreateJob (train load)");
  }
  // Wait until it trains (past its first step), so the load meets steady training.
  const auto wait_deadline = Clock::now() + std::chrono::seconds(120);
  v1::Job before;
  while (true) {
    before = GetJobOf(ft.get(), t, job.job_id());
    if (before.state() == v1::RUNNING && before.progress().step() >= 1) break;
    if (before.state() != v1::QUEUED && before.state() != v1::RUNNING) {
      Die(absl::StrCat("train-load job ended ", v1::JobState_Name(before.state()), " before the load: ", before.error()));
    }
    if (Clock::now() > wait_deadline) Die("train-load job did not start training within 120 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const auto t0 = Clock::now();
  r.training = RunGenerate(o, target, tenants, n, 1 << 30, kSeconds);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  v1::Job after = GetJobOf(ft.get(), t, job.job_id());
  r.steps_during = after.progress().step() - before.progress().step();
  if (after.state() != v1::RUNNING) {
    std::printf("  note: the train-load job was %s at the end of the load (use more --train-load-steps)\n",
                v1::JobState_Name(after.state()).c_str());
  }
  r.step_ms = r.steps_during > 0 ? 1000.0 * secs / r.steps_during : 0;
  {
    grpc::ClientContext ctx;
    Prepare(&ctx, t.key);
    v1::CancelJobRequest req;
    req.set_tenant_id(t.id);
    req.set_job_id(job.job_id());
    v1::Job cancelled;
    grpc::Status st = ft->CancelJob(&ctx, req, &cancelled);
    if (!st.ok() && st.error_code() != grpc::StatusCode::FAILED_PRECONDITION) Check(st, "FineTuning.CancelJob");
  }
  for (double ms : r.idle.latencies_ms) r.max_idle_ms = std::max(r.max_idle_ms, ms);
  for (double ms : r.training.latencies_ms) r.max_training_ms = std::max(r.max_training_ms, ms);
  return r;
}

namespace {

// ---------------------------------------------------------------------------------------------------
// --many-tenants: overlay tiers with many registered tenants (issue 20, section 3).
//
// Setup writes the tenants into the data dir BEFORE the server starts, through the registry library
// (as a restore would): n tenants, each with one live LoRA version (rank --lora-rank on two expert
// slots, random factors; a few KB on disk, merged into dense slot weights when loaded). Fine-tuning
// thousands of versions through jobs would take hours on this machine; what is measured (serving)
// then goes through the public API only, and every response's expert_version is checked.
// The server runs with an overlay device tier of --device-overlays tenants' overlays and a host tier
// of --host-overlays, far below the total, so requests to the long tail promote from the host or load
// from disk on a loader thread while the batch keeps decoding.
// Traffic: closed loop, --threads clients, each request's tenant drawn from a Zipf(--zipf) law over
// the first n tenants (rank 1 = tenant 0, the hottest). Counts are interleaved over --rounds rounds.

struct TierCounters {
  int64_t device_hits = 0, device_misses = 0, host_hits = 0, host_misses = 0, promotions = 0, demotions = 0;
  static TierCounters Of(const v1::RuntimeStatus& s) {
    return {s.overlay_device_hits(), s.overlay_device_misses(), s.overlay_host_hits(), s.overlay_host_misses(),
            s.overlay_promotions(),  s.overlay_demotions()};
  }
  TierCounters Minus(const TierCounters& b) const {
    return {device_hits - b.device_hits, device_misses - b.device_misses, host_hits - b.host_hits,
            host_misses - b.host_misses, promotions - b.promotions,       demotions - b.demotions};
  }
  void Add(const TierCounters& b) {
    device_hits += b.device_hits, device_misses += b.device_misses, host_hits += b.host_hits;
    host_misses += b.host_misses, promotions += b.promotions, demotions += b.demotions;
  }
};

struct ZipfResult {
  int tenants = 0;
  int64_t requests = 0, tokens = 0;
  double seconds = 0, server_cpu_s = 0;
  std::vector<double> all_ms, hot_ms;  // hot: requests to the --hot-tenants hottest tenants
  TierCounters tiers;
  double rps() const { return seconds > 0 ? requests / seconds : 0; }
  // Server CPU per request beyond what the idle server burns in the same time (`idle_cpu`: CPU seconds
  // per second with no requests -- its background threads and this bench's status polling).
  double cpu_ms_per_req(double idle_cpu) const {
    return requests > 0 ? 1000 * std::max(0.0, server_cpu_s - idle_cpu * seconds) / requests : 0;
  }
};

v1::RuntimeStatus GetStatus(const std::string& target, const std::string& admin_key) {
  auto admin = v1::Admin::NewStub(NewChannel(target));
  grpc::ClientContext ctx;
  Prepare(&ctx, admin_key, 30);
  v1::RuntimeStatus s;
  Check(admin->GetRuntimeStatus(&ctx, v1::GetRuntimeStatusRequest(), &s), "Admin.GetRuntimeStatus");
  return s;
}

// Tenants prefix-0 .. prefix-(n-1), each with live version 1: a LoRA version of two slots.
std::vector<Tenant> PopulateRegistry(const std::string& data_dir, const std::string& prefix, int n, int rank,
                                     const std::string& backbone) {
  absl::StatusOr<tessera::ModelConfig> config =
      tessera::ModelConfig::Builtin(absl::StrCat("builtin:", absl::StripPrefix(backbone, "random:")));
  if (!absl::StartsWith(backbone, "random:") || !config.ok()) {
    Die(absl::StrCat("--many-tenants needs a random:<builtin> backbone (its shapes are known before the server "
                     "starts), got ", backbone));
  }
  const tessera::ModelConfig& c = *config;
  auto registry = tessera::storage::Registry::Open(data_dir);
  if (!registry.ok()) Die(absl::StrCat("opening the registry in ", data_dir, ": ", registry.status().ToString()));
  std::vector<Tenant> tenants(n);
  uint64_t s = 0x2545f4914f6cdd1dull;
  auto uniform = [&] {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    return static_cast<float>(static_cast<double>(s >> 11) / 9007199254740992.0 - 0.5) * 0.1f;
  };
  for (int i = 0; i < n; ++i) {
    Tenant& t = tenants[i];
    t.id = absl::StrCat(prefix, "-", i);
    t.live = 1;
    if (auto st = (*registry)->CreateTenant(t.id, t.id, "bench_serve"); !st.ok()) {
      Die(absl::StrCat("Registry::CreateTenant ", t.id, ": ", st.status().ToString()));
    }
    tessera::LoraAdapter a;
    a.rank = rank;
    a.alpha = rank;
    std::vector<tessera::SlotId> slots = {{static_cast<int32_t>(i % c.num_layers), static_cast<int32_t>(i % c.num_experts)},
                                          {static_cast<int32_t>((i + 1) % c.num_layers),
                                           static_cast<int32_t>((i * 7 + 3) % c.num_experts)}};
    if (slots[1] == slots[0]) slots.pop_back();
    for (const tessera::SlotId& slot : slots) {
      std::array<tessera::LoraFactors, 3>& f = a.factors[slot];
      for (int part = 0; part < 3; ++part) {
        const int64_t in = part == 2 ? c.expert_dim : c.hidden_size, out = part == 2 ? c.hidden_size : c.expert_dim;
        f[part].a.resize(rank * in);
        f[part].b.resize(out * rank);
        for (float& x : f[part].a) x = uniform();
        for (float& x : f[part].b) x = uniform();
      }
    }
    absl::StatusOr<std::string> blob = a.Serialize(c);
    if (!blob.ok()) Die(absl::StrCat("LoraAdapter::Serialize: ", blob.status().ToString()));
    absl::StatusOr<std::string> digest = (*registry)->blobs().Put(*blob);
    if (!digest.ok()) Die(absl::StrCat("BlobStore::Put: ", digest.status().ToString()));
    tessera::storage::NewVersion nv;
    nv.tenant_id = t.id;
    std::string slots_json = "[";
    for (size_t k = 0; k < slots.size(); ++k) {
      absl::StrAppend(&slots_json, k ? "," : "", "{\"layer\":", slots[k].layer, ",\"expert\":", slots[k].expert, "}");
    }
    nv.slots_json = slots_json + "]";
    nv.blob_digest = *digest;
    nv.method = "lora";
    nv.lora_rank = rank;
    auto v = (*registry)->PublishVersion(nv, "bench_serve");
    if (!v.ok()) Die(absl::StrCat("Registry::PublishVersion ", t.id, ": ", v.status().ToString()));
    if (auto p = (*registry)->Promote(t.id, v->version, "bench_serve"); !p.ok()) {
      Die(absl::StrCat("Registry::Promote ", t.id, ": ", p.status().ToString()));
    }
    t.live = v->version;
    if ((i + 1) % 1000 == 0) {
      std::printf("  setup: %d/%d tenants registered\n", i + 1, n);
      std::fflush(stdout);
    }
  }
  return tenants;
}

// Zipf(s) over ranks 1..n: P(k) ~ 1 / k^s. Sample() draws a 0-based rank.
class Zipf {
 public:
  Zipf(int n, double s) : cdf_(n) {
    double sum = 0;
    for (int k = 0; k < n; ++k) cdf_[k] = (sum += 1.0 / std::pow(k + 1.0, s));
    for (double& x : cdf_) x /= sum;
  }
  int Sample(uint64_t* state) const {
    uint64_t& x = *state;
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    const double u = static_cast<double>(x >> 11) / 9007199254740992.0;
    return static_cast<int>(std::min<size_t>(std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin(),
                                             cdf_.size() - 1));
  }

 private:
  std::vector<double> cdf_;
};

ZipfResult RunZipf(const Options& o, const std::string& target, const std::string& admin_key,
                   const std::vector<Tenant>& tenants, int n, int total, int cap_s, uint64_t seed) {
  const Zipf zipf(n, o.zipf_s);
  std::atomic<int64_t> next{0};
  std::mutex mu;
  std::string first_error;
  ZipfResult r;
  r.tenants = n;
  std::atomic<int64_t> tokens{0};
  const TierCounters before = TierCounters::Of(GetStatus(target, admin_key));
  const double cpu0 = ServerCpuSeconds();
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::seconds(cap_s);
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int w = 0; w < o.threads; ++w) channels.push_back(NewChannel(target));
  std::vector<std::thread> workers;
  for (int w = 0; w < o.threads; ++w) {
    workers.emplace_back([&, w] {
      auto stub = v1::Inference::NewStub(channels[w]);
      uint64_t rng = (seed + 1) * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(w) * 0xbf58476d1ce4e5b9ull + 1;
      std::vector<double> all, hot;
      while (true) {
        const int64_t i = next.fetch_add(1);
        if (i >= total || Clock::now() > deadline) break;
        const int rank = zipf.Sample(&rng);
        const Tenant& t = tenants[rank];
        v1::GenerateRequest req;
        req.set_tenant_id(t.id);
        req.set_prompt(kPrompts[i % 4]);
        req.set_max_tokens(o.max_tokens);
        req.set_temperature(0);
        v1::GenerateResponse resp;
        grpc::ClientContext ctx;
        Prepare(&ctx, admin_key);
        const auto t0 = Clock::now();
        grpc::Status s = stub->Generate(&ctx, req, &resp);
        const double ms = Millis(Clock::now() - t0);
        std::string err;
        if (!s.ok()) {
          err = absl::StrCat("Inference.Generate for ", t.id, ": ", StatusText(s));
        } else if (resp.expert_version() != t.live) {
          err = absl::StrCat("Inference.Generate for ", t.id, " was served by version ", resp.expert_version(),
                             ", but its live version is ", t.live);
        }
        if (!err.empty()) {
          std::lock_guard<std::mutex> l(mu);
          if (first_error.empty()) first_error = err;
          break;
        }
        tokens += resp.usage().completion_tokens();
        all.push_back(ms);
        if (rank < o.hot_tenants) hot.push_back(ms);
      }
      std::lock_guard<std::mutex> l(mu);
      r.all_ms.insert(r.all_ms.end(), all.begin(), all.end());
      r.hot_ms.insert(r.hot_ms.end(), hot.begin(), hot.end());
    });
  }
  for (auto& w : workers) w.join();
  if (!first_error.empty()) Die(first_error);
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (double cpu1 = ServerCpuSeconds(); cpu0 >= 0 && cpu1 >= 0) r.server_cpu_s = cpu1 - cpu0;
  r.requests = static_cast<int64_t>(r.all_ms.size());
  r.tokens = tokens.load();
  r.tiers = TierCounters::Of(GetStatus(target, admin_key)).Minus(before);
  return r;
}

void AccumulateZipf(const ZipfResult& round, ZipfResult* total) {
  total->tenants = round.tenants;
  total->requests += round.requests;
  total->tokens += round.tokens;
  total->seconds += round.seconds;
  total->server_cpu_s += round.server_cpu_s;
  total->all_ms.insert(total->all_ms.end(), round.all_ms.begin(), round.all_ms.end());
  total->hot_ms.insert(total->hot_ms.end(), round.hot_ms.begin(), round.hot_ms.end());
  total->tiers.Add(round.tiers);
}

double Rate(int64_t hits, int64_t misses) { return hits + misses > 0 ? static_cast<double>(hits) / (hits + misses) : 0; }

int RunManyTenants(const Options& o) {
  if (!o.server.empty()) Die("--many-tenants starts its own server (it registers the tenants before the start)");
  const int max_tenants = *std::max_element(o.many_tenants.begin(), o.many_tenants.end());
  if (o.hot_tenants > max_tenants) {
    // The hot phase draws from the registered tenants (the largest count); more would index past them.
    Die(absl::StrCat("--hot-tenants ", o.hot_tenants, " exceeds the largest --many-tenants count ", max_tenants,
                     ": register at least as many tenants as are hot"));
  }
  const auto bench_start = Clock::now();
  std::string bin = FindServerBin(o.server_bin);
  char tmpl[] = "/tmp/bench_serve.XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) Die(absl::StrCat("mkdtemp: ", std::strerror(errno)));
  g_temp_root = tmpl;
  g_keep_dir = o.keep;
  const std::string data_dir = g_temp_root + "/data";
  std::printf("bench_serve --many-tenants: registering %d tenants (one live LoRA version each, rank %d, 2 slots) in %s\n",
              max_tenants, o.lora_rank, data_dir.c_str());
  std::fflush(stdout);
  const auto setup_start = Clock::now();
  std::vector<Tenant> tenants = PopulateRegistry(data_dir, o.prefix, max_tenants, o.lora_rank, o.backbone);
  const double setup_s = std::chrono::duration<double>(Clock::now() - setup_start).count();
  // One tenant's overlay on the device: its slots merged to dense f32 (3 matrices of F x D per slot).
  const tessera::ModelConfig c =
      *tessera::ModelConfig::Builtin(absl::StrCat("builtin:", absl::StripPrefix(o.backbone, "random:")));
  const int64_t overlay_bytes = 2 * 3 * c.expert_dim * c.hidden_size * 4;
  const int64_t device_bytes = o.device_overlays * overlay_bytes, host_bytes = o.host_overlays * overlay_bytes;
  const int port = StartServer(bin, data_dir,
                               {"--backbone", o.backbone, "--device", o.device, "--dtype", "f32", "--no-jobs",
                                "--overlay-device-bytes", std::to_string(device_bytes), "--overlay-host-bytes",
                                std::to_string(host_bytes)});
  const std::string target = absl::StrCat("127.0.0.1:", port);
  const std::string admin_key = ReadKey(data_dir + "/admin.key");
  std::printf("bench_serve: setup %.1f s; started %s on %s: overlay tiers device %lld bytes (%d overlays of %lld), "
              "host %lld bytes (%d overlays); all %d overlays would take %lld bytes\n",
              setup_s, bin.c_str(), target.c_str(), static_cast<long long>(device_bytes), o.device_overlays,
              static_cast<long long>(overlay_bytes), static_cast<long long>(host_bytes), o.host_overlays, max_tenants,
              static_cast<long long>(overlay_bytes) * max_tenants);
  std::fflush(stdout);

  // Budgets are checked from outside while the load runs: Admin.GetRuntimeStatus every 100 ms.
  std::atomic<bool> stop_sampler{false};
  std::atomic<int64_t> max_device{0}, max_host{0}, max_held{0}, samples{0};
  int64_t device_limit = 0, host_limit = 0;
  {
    v1::RuntimeStatus s = GetStatus(target, admin_key);
    device_limit = s.resident_bytes_limit();
    host_limit = s.overlay_host_bytes_limit();
  }
  std::thread sampler([&] {
    while (!stop_sampler.load()) {
      v1::RuntimeStatus s = GetStatus(target, admin_key);
      max_device = std::max(max_device.load(), s.resident_bytes());
      max_host = std::max(max_host.load(), s.overlay_host_bytes());
      max_held = std::max(max_held.load(), s.overlay_held_bytes());
      samples.fetch_add(1);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });

  // Phases: the hot tenants alone (no cold loads), then each tenant count; interleaved over rounds.
  std::vector<int> counts = {o.hot_tenants};
  counts.insert(counts.end(), o.many_tenants.begin(), o.many_tenants.end());
  std::vector<ZipfResult> phases(counts.size());
  RunZipf(o, target, admin_key, tenants, std::min(64, max_tenants), 4 * o.threads, 60, 999);  // warm-up, untimed
  // The idle server's CPU rate (background threads, the status polling above), subtracted per phase.
  double idle_cpu = 0;
  {
    const double c0 = ServerCpuSeconds();
    const auto t0 = Clock::now();
    std::this_thread::sleep_for(std::chrono::seconds(3));
    const double c1 = ServerCpuSeconds();
    idle_cpu = std::max(0.0, (c1 - c0) / std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::printf("bench_serve: idle server CPU %.1f ms/s (subtracted from each phase's CPU per request)\n", 1000 * idle_cpu);
  for (int round = 0; round < o.rounds; ++round) {
    for (size_t k = 0; k < counts.size(); ++k) {
      const int n = counts[k];
      const int requests = o.requests / o.rounds + (round < o.requests % o.rounds ? 1 : 0);
      const int cap_s = std::max(1, o.duration_s / o.rounds);
      RunZipf(o, target, admin_key, tenants, n, 2 * o.threads, 30, 1000 + round * 10 + k);  // re-warm this mix
      ZipfResult r = RunZipf(o, target, admin_key, tenants, n, requests, cap_s, round * 10 + k);
      std::printf("  round %d: %5d tenant(s): %lld requests in %.1f s (%.1f req/s, server CPU %.2f ms/req)\n",
                  round + 1, n, static_cast<long long>(r.requests), r.seconds, r.rps(), r.cpu_ms_per_req(idle_cpu));
      std::fflush(stdout);
      AccumulateZipf(r, &phases[k]);
    }
  }
  stop_sampler = true;
  sampler.join();
  v1::RuntimeStatus end = GetStatus(target, admin_key);

  std::printf("\nMany tenants (Zipf s=%.2f over the first n of %d registered tenants; greedy, max_tokens=%d, %d client "
              "threads; CPU ms/req = tessera-server's user+system CPU beyond its idle rate, per request; 'hot' = the %d "
              "hottest tenants)\n",
              o.zipf_s, max_tenants, o.max_tokens, o.threads, o.hot_tenants);
  std::printf("  %-7s %8s %8s %9s %11s %8s %8s %9s %9s %9s %9s %6s %6s\n", "tenants", "requests", "seconds", "req/s",
              "CPU ms/req", "p50 ms", "p99 ms", "hot p99", "dev hit", "host hit", "disk ld", "promo", "demo");
  for (size_t k = 0; k < counts.size(); ++k) {
    const ZipfResult& r = phases[k];
    std::printf("  %-7s %8lld %8.2f %9.2f %11.2f %8.1f %8.1f %9.1f %8.1f%% %8.1f%% %9lld %6lld %6lld\n",
                (k == 0 ? absl::StrCat(r.tenants, " hot") : absl::StrCat(r.tenants)).c_str(),
                static_cast<long long>(r.requests), r.seconds, r.rps(), r.cpu_ms_per_req(idle_cpu), Percentile(r.all_ms, 50),
                Percentile(r.all_ms, 99), Percentile(r.hot_ms, 99),
                100 * Rate(r.tiers.device_hits, r.tiers.device_misses),
                100 * Rate(r.tiers.host_hits, r.tiers.host_misses), static_cast<long long>(r.tiers.host_misses),
                static_cast<long long>(r.tiers.promotions), static_cast<long long>(r.tiers.demotions));
  }
  std::printf("  (dev hit = acquisitions found on the device tier; host hit = device misses promoted from the host "
              "tier; disk ld = device misses loaded from the registry)\n");
  std::printf("\nOverlay tiers at the end: device %lld / %lld bytes (%d overlays), host %lld / %lld bytes (%d overlays)\n",
              static_cast<long long>(end.resident_bytes()), static_cast<long long>(end.resident_bytes_limit()),
              end.resident_versions_size(), static_cast<long long>(end.overlay_host_bytes()),
              static_cast<long long>(end.overlay_host_bytes_limit()),
              static_cast<int>(end.overlay_host_bytes() / std::max<int64_t>(1, overlay_bytes)));
  std::printf("  max seen over %lld samples: device %lld (limit %lld), host %lld (limit %lld), held by running "
              "requests beyond the device tier %lld\n",
              static_cast<long long>(samples.load()), static_cast<long long>(max_device.load()),
              static_cast<long long>(device_limit), static_cast<long long>(max_host.load()),
              static_cast<long long>(host_limit), static_cast<long long>(max_held.load()));
  std::printf("  totals: device hits %lld misses %lld (%.1f%%), host hits %lld misses %lld (%.1f%%), %lld promotions, "
              "%lld demotions\n",
              static_cast<long long>(end.overlay_device_hits()), static_cast<long long>(end.overlay_device_misses()),
              100 * Rate(end.overlay_device_hits(), end.overlay_device_misses()),
              static_cast<long long>(end.overlay_host_hits()), static_cast<long long>(end.overlay_host_misses()),
              100 * Rate(end.overlay_host_hits(), end.overlay_host_misses()),
              static_cast<long long>(end.overlay_promotions()), static_cast<long long>(end.overlay_demotions()));
  std::printf("\nTotal %.1f s (setup %.1f s)\n\n", std::chrono::duration<double>(Clock::now() - bench_start).count(),
              setup_s);
  if (max_device.load() > device_limit || max_host.load() > host_limit) {
    Die("an overlay tier exceeded its budget (see the max seen above)");
  }
  auto phase_for = [&](int n) -> const ZipfResult* {
    for (size_t k = 1; k < counts.size(); ++k) {
      if (phases[k].tenants == n) return &phases[k];
    }
    return nullptr;
  };
  const ZipfResult* one = phase_for(1);
  const ZipfResult* many = phase_for(1000);
  const double ratio = one && many && one->rps() > 0 ? many->rps() / one->rps() : 0;
  const double cpu_ratio =
      one && many && many->cpu_ms_per_req(idle_cpu) > 0 ? one->cpu_ms_per_req(idle_cpu) / many->cpu_ms_per_req(idle_cpu) : 0;
  const double hot_alone = Percentile(phases[0].hot_ms, 99);
  const double hot_mixed = many ? Percentile(many->hot_ms, 99) : 0;
  std::printf("tiers_rps_1=%.2f tiers_rps_1000=%.2f hot_p99_alone_ms=%.1f hot_p99_1000_ms=%.1f hot_p99_ratio=%.3f "
              "cpu_ratio_1000=%.3f ratio_1000=%.3f\n",
              one ? one->rps() : 0.0, many ? many->rps() : 0.0, hot_alone, hot_mixed,
              hot_alone > 0 ? hot_mixed / hot_alone : 0.0, cpu_ratio, ratio);
  std::fflush(stdout);
  Cleanup();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  StartSignalThread();
  std::atexit(Cleanup);

  Options o = ParseFlags(argc, argv);
  if (!o.many_tenants.empty()) return RunManyTenants(o);
  const int max_tenants = *std::max_element(o.tenants.begin(), o.tenants.end());
  const auto bench_start = Clock::now();

  std::string target, admin_key;
  if (o.server.empty()) {
    std::string bin = FindServerBin(o.server_bin);
    char tmpl[] = "/tmp/bench_serve.XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) Die(absl::StrCat("mkdtemp: ", std::strerror(errno)));
    g_temp_root = tmpl;
    g_keep_dir = o.keep;
    std::string data_dir = g_temp_root + "/data";
    int port = StartServer(bin, data_dir,
                           {"--backbone", o.backbone, "--device", o.device, "--max-concurrent-jobs",
                            std::to_string(o.max_jobs)});
    target = absl::StrCat("127.0.0.1:", port);
    admin_key = ReadKey(data_dir + "/admin.key");
    std::printf("bench_serve: started %s on %s (data dir %s, backbone %s, device %s)\n", bin.c_str(),
                target.c_str(), data_dir.c_str(), o.backbone.c_str(), o.device.c_str());
  } else {
    target = o.server;
    admin_key = ReadKey(o.admin_key_file);
    std::printf("bench_serve: targeting %s\n", target.c_str());
  }

  // The server must be up and serve inference and training.
  v1::RuntimeStatus status;
  {
    auto admin = v1::Admin::NewStub(NewChannel(target));
    grpc::Status s;
    for (int attempt = 0; attempt < 100; ++attempt) {
      grpc::ClientContext ctx;
      Prepare(&ctx, admin_key, 10);
      s = admin->GetRuntimeStatus(&ctx, v1::GetRuntimeStatusRequest(), &status);
      if (s.ok() || s.error_code() != grpc::StatusCode::UNAVAILABLE) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    Check(s, "Admin.GetRuntimeStatus");
    if (!status.inference_available()) Die("the server runs without inference (Inference answers UNAVAILABLE)");
    if (!status.training_available()) Die("the server runs without a job runner (setup needs fine-tune jobs)");
  }
  std::printf("bench_serve: backbone %s (%s, %d layers x %d experts, top-%d), device %s, %d client threads\n",
              status.backbone().name().c_str(), status.backbone().architecture().c_str(),
              status.backbone().num_layers(), status.backbone().num_experts(),
              status.backbone().experts_per_token(), status.device().c_str(), o.threads);

  std::vector<Tenant> tenants(max_tenants);
  for (int i = 0; i < max_tenants; ++i) tenants[i].id = absl::StrCat(o.prefix, "-", i);
  auto setup_start = Clock::now();
  std::printf("bench_serve: setup: %d tenants, each a %d-step fine-tune job (explicit slots, auto_promote)\n",
              max_tenants, o.train_steps);
  std::fflush(stdout);
  SetupTenants(o, target, admin_key, status.backbone(), &tenants);
  double setup_s = std::chrono::duration<double>(Clock::now() - setup_start).count();
  std::printf("bench_serve: setup done in %.1f s; every tenant has its own live version\n", setup_s);

  // Warm-up (untimed): one request per tenant, which also checks every tenant serves its version.
  RunGenerate(o, target, tenants, max_tenants, std::max(max_tenants, o.threads), 120);

  std::vector<PhaseResult> phases(o.tenants.size());
  for (int round = 0; round < o.rounds; ++round) {
    for (size_t k = 0; k < o.tenants.size(); ++k) {
      const int n = o.tenants[k];
      const int requests = o.requests / o.rounds + (round < o.requests % o.rounds ? 1 : 0);
      const int cap_s = std::max(1, o.duration_s / o.rounds);
      RunGenerate(o, target, tenants, n, o.threads, 60);  // re-warm this mix (untimed)
      PhaseResult r = RunGenerate(o, target, tenants, n, requests, cap_s);
      std::printf("  generate round %d: %2d tenant(s): %lld requests in %.1f s (%.1f req/s)\n", round + 1, n,
                  static_cast<long long>(r.requests), r.seconds, r.rps);
      std::fflush(stdout);
      Accumulate(r, &phases[k]);
    }
  }

  SwapResult swap;
  {
    // Optional background Generate load on the other tenants while tenant 0 flips.
    std::atomic<bool> stop{false};
    std::mutex mu;
    std::string load_error;
    std::vector<std::thread> load;
    for (int w = 0; w < o.swap_load_threads && tenants.size() > 1; ++w) {
      load.emplace_back([&, w] {
        auto stub = v1::Inference::NewStub(NewChannel(target));
        for (size_t i = w; !stop.load(); ++i) {
          const Tenant& t = tenants[1 + i % (tenants.size() - 1)];
          v1::GenerateRequest req;
          req.set_tenant_id(t.id);
          req.set_prompt(kPrompts[i % 4]);
          req.set_max_tokens(o.max_tokens);
          v1::GenerateResponse resp;
          grpc::ClientContext ctx;
          Prepare(&ctx, t.key);
          grpc::Status st = stub->Generate(&ctx, req, &resp);
          if (!st.ok() || resp.expert_version() != t.live) {
            std::lock_guard<std::mutex> l(mu);
            if (load_error.empty()) {
              load_error = st.ok() ? absl::StrCat("Inference.Generate for ", t.id, " served by version ",
                                                  resp.expert_version(), ", live is ", t.live)
                                   : absl::StrCat("Inference.Generate for ", t.id, ": ", StatusText(st));
            }
            return;
          }
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(o.swap_load_threads > 0 ? 500 : 0));
    swap = RunSwaps(o, target, admin_key, tenants[0]);
    stop = true;
    for (auto& t : load) t.join();
    if (!load_error.empty()) Die("during the flips: " + load_error);
  }
  GetJobResult getjob = RunGetJob(o, target, tenants);
  std::optional<TrainLoadResult> train_load;
  if (o.train_load_steps > 0) train_load = RunTrainLoad(o, target, tenants);

  std::printf("\nGenerate (greedy, max_tokens=%d, %d client threads; request i -> tenant i mod n)\n",
              o.max_tokens, o.threads);
  std::printf("  %-8s %9s %9s %10s %10s %10s %10s %14s\n", "tenants", "requests", "seconds", "req/s", "tok/s",
              "p50 ms", "p99 ms", "srv CPU ms/req");
  for (const PhaseResult& r : phases) {
    std::string cpu = r.server_cpu_s >= 0 && r.requests > 0
                          ? absl::StrFormat("%.2f", 1000 * r.server_cpu_s / r.requests) : std::string("-");
    std::printf("  %-8d %9lld %9.2f %10.2f %10.1f %10.1f %10.1f %14s\n", r.tenants,
                static_cast<long long>(r.requests), r.seconds, r.rps, r.tok_s, r.p50, r.p99, cpu.c_str());
  }
  std::printf("\nPromote -> served (%d flips of %s between version %lld and the base, %s)\n", o.flips,
              tenants[0].id.c_str(), static_cast<long long>(swap.trained),
              o.swap_load_threads > 0 ? absl::StrCat(o.swap_load_threads, " threads generating for other tenants").c_str()
                                      : "idle server");
  std::printf("  Admin.Promote latency      p50 %8.2f ms   p99 %8.2f ms\n", Percentile(swap.promote_ms, 50),
              Percentile(swap.promote_ms, 99));
  std::printf("  return -> first new-version Generate (max_tokens=1)   p50 %8.2f ms   p99 %8.2f ms\n",
              Percentile(swap.served_ms, 50), Percentile(swap.served_ms, 99));
  std::printf("  stale responses after Promote returned: %lld\n", static_cast<long long>(swap.stale));
  std::printf("\nGetJob (%d client threads over %zu tenants' jobs)\n", o.threads, tenants.size());
  std::printf("  %lld calls in %.2f s: %.0f calls/s, p50 %.2f ms, p99 %.2f ms", static_cast<long long>(getjob.calls),
              getjob.seconds, getjob.rps, getjob.p50, getjob.p99);
  if (getjob.server_cpu_s >= 0 && getjob.calls > 0) {
    std::printf(", server CPU %.0f us/call", 1e6 * getjob.server_cpu_s / getjob.calls);
  }
  std::printf("\n");
  if (train_load) {
    const TrainLoadResult& tl = *train_load;
    std::printf("\nServing while a fine-tune job trains (%d tenants' Generate load, 10 s each)\n",
                tl.training.tenants);
    std::printf("  without the job: %.1f req/s, p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", tl.idle.rps, tl.idle.p50,
                tl.idle.p99, tl.max_idle_ms);
    std::printf("  with the job:    %.1f req/s, p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", tl.training.rps,
                tl.training.p50, tl.training.p99, tl.max_training_ms);
    std::printf("  job: %lld steps during the load, %.1f ms per step (batch 16 x 64 tokens)\n",
                static_cast<long long>(tl.steps_during), tl.step_ms);
    std::printf("serve_during_train idle_p99_ms=%.2f train_p99_ms=%.2f train_max_ms=%.2f stall_max_ms=%.2f "
                "train_step_ms=%.2f\n",
                tl.idle.p99, tl.training.p99, tl.max_training_ms, std::max(0.0, tl.max_training_ms - tl.idle.p50),
                tl.step_ms);
  }
  std::printf("\nTotal %.1f s (setup %.1f s)\n\n", std::chrono::duration<double>(Clock::now() - bench_start).count(),
              setup_s);

  auto rps_for = [&](int n) -> double {
    for (const PhaseResult& r : phases) {
      if (r.tenants == n) return r.rps;
    }
    return 0;
  };
  double rps1 = rps_for(1), rps64 = rps_for(64);
  std::printf("gen_rps_1=%.2f gen_rps_64=%.2f ratio=%.3f swap_p50_ms=%.2f getjob_rps=%.0f\n", rps1, rps64,
              rps1 > 0 ? rps64 / rps1 : 0.0, Percentile(swap.served_ms, 50), getjob.rps);
  std::fflush(stdout);
  if (swap.stale > 0) {
    Die(absl::StrCat(swap.stale, " Generate responses started after Admin.Promote returned were served by the ",
                     "previous version (API.md: every request that starts after the call returns is served by it)"));
  }
  Cleanup();
  return 0;
}
