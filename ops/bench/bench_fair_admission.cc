// bench_fair_admission: what one tenant flooding the server does to another tenant's latency, under
// fair admission (deficit round-robin across tenants, the default) and under FIFO, through the public
// tessera.v1 API only.
//
// For each policy it starts its own tessera-server (`--admission fair|fifo`, random:tiny by default,
// no jobs, a temporary data dir; stopped on every exit path) and creates two tenants through
// Admin.CreateTenant: "steady" and "flood" (both served by the base experts, so no fine-tuning is
// needed). Then:
//   alone: the steady client (one closed loop: Generate, then --think-ms of idle time) runs for
//          --duration seconds by itself;
//   flood: the same steady client, while --flood-clients client threads of the flooding tenant issue
//          Generate back to back (with a --flood-max-tokens completion each) for the same time.
// It reports the steady tenant's p50/p99 in both phases, and the flooding tenant's throughput and
// refusals (RESOURCE_EXHAUSTED from --max-queued-per-tenant counts as a refusal, not a failure: that
// is the bound doing its job). Latencies are wall-clock on a machine other processes share: compare
// ratios from the same run, not absolute numbers across runs.
//
// Any other failed RPC ends the run with exit status 1 and a one-line reason on stderr. The last stdout
// line is exactly
//   fair_p99_alone_ms=<x> fair_p99_flood_ms=<x> fifo_p99_alone_ms=<x> fifo_p99_flood_ms=<x> fifo_ratio=<x> ratio=<x>
// where ratio = fair_p99_flood_ms / fair_p99_alone_ms (the steady tenant's p99 with the flood over
// without it, under the default policy) and fifo_ratio the same under FIFO.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
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
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "tessera/v1/admin.grpc.pb.h"
#include "tessera/v1/inference.grpc.pb.h"

namespace {

namespace v1 = tessera::v1;
using Clock = std::chrono::steady_clock;

constexpr char kUsage[] = R"(bench_fair_admission: a steady tenant's latency with and without a flooding tenant,
under --admission fair and fifo.

Usage: bench_fair_admission [options]

  --server-bin PATH        tessera-server to start (default: the build tree's)
  --backbone B             the server's --backbone (default random:tiny)
  --duration S             seconds per phase (default 20)
  --flood-clients N        concurrent client threads of the flooding tenant (default 64)
  --flood-max-tokens N     max_tokens of each flooding request (default 32)
  --max-tokens N           max_tokens of each steady request (default 16)
  --think-ms N             the steady client's pause between requests (default 50)
  --policies LIST          fair,fifo (default) or one of them
  --server-arg ARG         passed to each tessera-server (repeatable), e.g. --server-arg=--max-batch=8
  --help                   this text
)";

std::atomic<pid_t> g_server{0};
std::string g_dir;

void StopServer() {
  pid_t pid = g_server.exchange(0);
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 200; ++i) {
    if (::waitpid(pid, nullptr, WNOHANG) == pid) return;
    ::usleep(50 * 1000);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

void Cleanup() {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  StopServer();
  if (!g_dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(g_dir, ec);
    g_dir.clear();
  }
}

[[noreturn]] void Die(const std::string& msg) {
  std::fflush(stdout);
  std::fprintf(stderr, "bench_fair_admission: FAILED: %s\n", msg.c_str());
  Cleanup();
  std::exit(1);
}

// SIGINT/SIGTERM are blocked everywhere and taken by this thread, which stops the server and exits.
void StartSignalThread() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    int sig = 0;
    sigwait(&set, &sig);
    Cleanup();
    std::_Exit(128 + sig);
  }).detach();
}

std::string FindServerBin(const std::string& flag) {
  if (!flag.empty()) return flag;
  std::error_code ec;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  const std::string dir = ec ? "." : self.parent_path().string();
  for (const std::string& c : {dir + "/../../services/tessera-server", dir + "/tessera-server"}) {
    if (::access(c.c_str(), X_OK) == 0) return c;
  }
  Die(absl::StrCat("tessera-server not found next to ", dir, " (build it, or pass --server-bin)"));
}

// Starts tessera-server on 127.0.0.1:0 in `data_dir` (stderr to data_dir/../server-<tag>.log) and
// returns its port, read from the banner "... listening on port N".
int StartServer(const std::string& bin, const std::string& data_dir, const std::string& tag,
                const std::vector<std::string>& extra) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) Die(absl::StrCat("pipe: ", std::strerror(errno)));
  const std::string log_path = g_dir + "/server-" + tag + ".log";
  std::vector<std::string> args = {bin, "--data-dir", data_dir, "--listen", "127.0.0.1:0", "--no-jobs", "--log-level", "warn"};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) Die(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);
    int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (log < 0 || ::dup2(out[1], STDOUT_FILENO) < 0 || ::dup2(log, STDERR_FILENO) < 0) ::_exit(127);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  g_server = pid;
  ::close(out[1]);
  std::string buf;
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (Clock::now() < deadline) {
    constexpr std::string_view kBanner = "listening on port ";
    if (size_t at = buf.find(kBanner); at != std::string::npos) {
      std::string rest = buf.substr(at + kBanner.size());
      rest = rest.substr(0, rest.find_first_not_of("0123456789"));
      int port = 0;
      if (absl::SimpleAtoi(rest, &port) && port > 0) return port;  // the pipe stays open: no SIGPIPE later
    }
    char chunk[512];
    pollfd pfd{out[0], POLLIN, 0};
    if (::poll(&pfd, 1, 200) > 0) {
      ssize_t n = ::read(out[0], chunk, sizeof(chunk));
      if (n > 0) buf.append(chunk, static_cast<size_t>(n));
    }
    if (::waitpid(pid, nullptr, WNOHANG) == pid) {
      g_server = 0;
      Die(absl::StrCat("tessera-server exited during startup; see ", log_path));
    }
  }
  Die("tessera-server did not print its port within 120 s");
}

std::shared_ptr<grpc::Channel> NewChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection per client thread
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

void Prepare(grpc::ClientContext* ctx, const std::string& key, int seconds = 120) {
  ctx->AddMetadata("authorization", "Bearer " + key);
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

struct Options {
  std::string server_bin, backbone = "random:tiny";
  double duration = 20;
  int flood_clients = 64, flood_max_tokens = 32, max_tokens = 16, think_ms = 50;
  std::vector<std::string> policies = {"fair", "fifo"};
  std::vector<std::string> server_args;
};

Options ParseFlags(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    bool inline_value = false;
    if (size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      inline_value = true;
    }
    auto str = [&]() -> std::string {
      if (inline_value) return value;
      if (i + 1 >= argc) Die(absl::StrCat(arg, " needs a value (see --help)"));
      return argv[++i];
    };
    auto integer = [&](int lo) {
      int n = 0;
      std::string v = str();
      if (!absl::SimpleAtoi(v, &n) || n < lo) Die(absl::StrCat(arg, " needs an integer >= ", lo, ", got \"", v, "\""));
      return n;
    };
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (arg == "--server-bin") {
      o.server_bin = str();
    } else if (arg == "--backbone") {
      o.backbone = str();
    } else if (arg == "--duration") {
      std::string v = str();
      if (!absl::SimpleAtod(v, &o.duration) || !(o.duration > 0)) Die("--duration needs seconds > 0");
    } else if (arg == "--flood-clients") {
      o.flood_clients = integer(1);
    } else if (arg == "--flood-max-tokens") {
      o.flood_max_tokens = integer(1);
    } else if (arg == "--max-tokens") {
      o.max_tokens = integer(1);
    } else if (arg == "--think-ms") {
      o.think_ms = integer(0);
    } else if (arg == "--policies") {
      o.policies.clear();
      std::string v = str();
      for (size_t start = 0; start <= v.size();) {
        size_t comma = v.find(',', start);
        std::string p = v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (p != "fair" && p != "fifo") Die(absl::StrCat("--policies: unknown policy \"", p, "\" (fair, fifo)"));
        o.policies.push_back(p);
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    } else if (arg == "--server-arg") {
      o.server_args.push_back(str());
    } else {
      Die(absl::StrCat("unknown argument \"", argv[i], "\" (see --help)"));
    }
  }
  return o;
}

std::string CreateTenant(v1::Admin::Stub& admin, const std::string& admin_key, const std::string& id) {
  v1::CreateTenantRequest req;
  req.set_tenant_id(id);
  req.set_display_name(id);
  v1::CreateTenantResponse resp;
  grpc::ClientContext ctx;
  Prepare(&ctx, admin_key);
  grpc::Status s = admin.CreateTenant(&ctx, req, &resp);
  if (!s.ok()) Die(absl::StrCat("Admin.CreateTenant ", id, ": ", s.error_message()));
  return resp.api_key().secret();
}

struct PhaseResult {
  std::vector<double> steady_ms;
  int64_t flood_ok = 0, flood_refused = 0;
  double seconds = 0;
};

// The steady closed loop for `seconds`, with `flood_clients` flooding threads beside it (0: alone).
PhaseResult RunPhase(const Options& o, const std::string& target, const std::string& steady_key,
                     const std::string& flood_key, int flood_clients) {
  PhaseResult r;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> flood_ok{0}, flood_refused{0};
  std::mutex fail_mu;
  std::string failure;
  auto fail = [&](const std::string& what) {
    std::lock_guard<std::mutex> lock(fail_mu);
    if (failure.empty()) failure = what;
    stop = true;
  };
  std::vector<std::thread> flooders;
  for (int c = 0; c < flood_clients; ++c) {
    flooders.emplace_back([&, c] {
      auto stub = v1::Inference::NewStub(NewChannel(target));
      v1::GenerateRequest req;
      req.set_tenant_id("flood");
      req.set_max_tokens(o.flood_max_tokens);
      int i = 0;
      while (!stop.load()) {
        req.set_prompt(absl::StrCat("flood ", c, " request ", i++, ": the quick brown fox"));
        grpc::ClientContext ctx;
        Prepare(&ctx, flood_key);
        v1::GenerateResponse resp;
        grpc::Status s = stub->Generate(&ctx, req, &resp);
        if (s.ok()) {
          ++flood_ok;
        } else if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
          ++flood_refused;
          std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a client backing off
        } else {
          fail(absl::StrCat("flood Generate: ", s.error_message()));
        }
      }
    });
  }
  // Let the flood fill the queues before the steady tenant's first measured request.
  if (flood_clients > 0) std::this_thread::sleep_for(std::chrono::seconds(2));
  auto stub = v1::Inference::NewStub(NewChannel(target));
  v1::GenerateRequest req;
  req.set_tenant_id("steady");
  req.set_max_tokens(o.max_tokens);
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.duration));
  for (int i = 0; Clock::now() < end && !stop.load(); ++i) {
    req.set_prompt(absl::StrCat("steady request ", i, ": hello there"));
    grpc::ClientContext ctx;
    Prepare(&ctx, steady_key);
    v1::GenerateResponse resp;
    const auto t0 = Clock::now();
    grpc::Status s = stub->Generate(&ctx, req, &resp);
    if (!s.ok()) {
      fail(absl::StrCat("steady Generate: ", s.error_message()));
      break;
    }
    r.steady_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    std::this_thread::sleep_for(std::chrono::milliseconds(o.think_ms));
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  stop = true;
  for (auto& t : flooders) t.join();
  if (!failure.empty()) Die(failure);
  r.flood_ok = flood_ok.load();
  r.flood_refused = flood_refused.load();
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  StartSignalThread();
  std::atexit(Cleanup);
  const Options o = ParseFlags(argc, argv);
  const std::string bin = FindServerBin(o.server_bin);
  char tmpl[] = "/tmp/bench_fair_admission.XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) Die(absl::StrCat("mkdtemp: ", std::strerror(errno)));
  g_dir = tmpl;
  std::printf("bench_fair_admission: %s, backbone %s; steady: 1 client, max_tokens %d, %d ms think time; "
              "flood: %d clients, max_tokens %d; %.0f s per phase. Shared machine: wall-clock is noisy, read the ratios.\n",
              bin.c_str(), o.backbone.c_str(), o.max_tokens, o.think_ms, o.flood_clients, o.flood_max_tokens,
              o.duration);
  std::map<std::string, std::pair<double, double>> p99;  // policy -> (alone, flood)
  for (const std::string& policy : o.policies) {
    const std::string data_dir = g_dir + "/data-" + policy;
    std::vector<std::string> extra = {"--backbone", o.backbone, "--admission", policy};
    extra.insert(extra.end(), o.server_args.begin(), o.server_args.end());
    const int port = StartServer(bin, data_dir, policy, extra);
    const std::string target = absl::StrCat("127.0.0.1:", port);
    std::string admin_key;
    {
      std::ifstream in(data_dir + "/admin.key");
      std::getline(in, admin_key);
    }
    if (admin_key.empty()) Die(absl::StrCat("no admin key in ", data_dir));
    auto admin = v1::Admin::NewStub(NewChannel(target));
    const std::string steady_key = CreateTenant(*admin, admin_key, "steady");
    const std::string flood_key = CreateTenant(*admin, admin_key, "flood");
    // Warm-up: the first requests resolve the tenants and fill caches.
    Options warm = o;
    warm.duration = 2;
    RunPhase(warm, target, steady_key, flood_key, 0);
    PhaseResult alone = RunPhase(o, target, steady_key, flood_key, 0);
    PhaseResult flood = RunPhase(o, target, steady_key, flood_key, o.flood_clients);
    StopServer();
    const double a50 = Percentile(alone.steady_ms, 50), a99 = Percentile(alone.steady_ms, 99);
    const double f50 = Percentile(flood.steady_ms, 50), f99 = Percentile(flood.steady_ms, 99);
    std::printf("%s: steady alone:      %4zu requests, p50 %8.1f ms, p99 %8.1f ms\n", policy.c_str(),
                alone.steady_ms.size(), a50, a99);
    std::printf("%s: steady with flood: %4zu requests, p50 %8.1f ms, p99 %8.1f ms (x%.2f p99); flood: %.1f req/s "
                "served, %lld refused (RESOURCE_EXHAUSTED)\n",
                policy.c_str(), flood.steady_ms.size(), f50, f99, a99 > 0 ? f99 / a99 : 0.0,
                static_cast<double>(flood.flood_ok) / flood.seconds, static_cast<long long>(flood.flood_refused));
    std::fflush(stdout);
    p99[policy] = {a99, f99};
  }
  auto get = [&](const char* policy, bool flood) {
    auto it = p99.find(policy);
    return it == p99.end() ? 0.0 : (flood ? it->second.second : it->second.first);
  };
  auto ratio = [&](const char* policy) {
    return get(policy, false) > 0 ? get(policy, true) / get(policy, false) : 0.0;
  };
  std::printf("fair_p99_alone_ms=%.1f fair_p99_flood_ms=%.1f fifo_p99_alone_ms=%.1f fifo_p99_flood_ms=%.1f "
              "fifo_ratio=%.2f ratio=%.2f\n",
              get("fair", false), get("fair", true), get("fifo", false), get("fifo", true), ratio("fifo"),
              ratio("fair"));
  Cleanup();
  return 0;
}
