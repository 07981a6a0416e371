// bench_chunked_prefill: inter-token latency of decoding requests while long prompts arrive, with the
// runtime's chunked prefill off and on (issue 20 section 4), on builtin:tiny (random:tiny weights when
// asked for or when the checkpoint is absent).
//
// Load (the same requests in both runs, one fresh Runtime each): --streams clients each send
// --requests short prompts (10-60 bytes) one after another, each decoding --decode-tokens tokens; one
// more client sends --long long prompts (--long-tokens tokens, 4 completion tokens each) with a 20 ms
// pause between them. Continuous batching puts each long prompt into a step beside the decodes: without
// chunking that step runs the whole prompt, and every decoding request waits for it; with
// --max-step-tokens B the prompt is split so no step runs more than max(B, decodes + B/4) tokens.
//
// Inter-token latency (ITL): from RuntimeOptions::on_step, each step that decoded d requests contributes d
// samples of the time since the previous step ended (a decoding request gets one token per step, at the
// step's end). Reported: p50/p99/max ITL, the long prompts' time to first token, completion tokens/s.
// Every request's tokens are compared between the two runs (bit for bit); a difference is printed and the
// exit status is 1.
//
// Last line:
//   itl_p50_off_ms=<x> itl_p50_on_ms=<x> itl_p99_off_ms=<x> itl_p99_on_ms=<x> cpu_itl_p99_off_ms=<x>
//   cpu_itl_p99_on_ms=<x> wall_ratio=<itl_p99_off/on> long_ttft_off_ms=<x> long_ttft_on_ms=<x> tok_s_off=<x>
//   tok_s_on=<x> outputs_equal=<true|false> ratio=<cpu_itl_p99_off/on>
// (cpu_*: the same ITL samples in process CPU time, i.e. the step's work without a shared machine's
// preemptions, which on the 2-core build machine under other builds dominate wall time; OpenBLAS worker
// threads spinning count in it too, so it overstates a step's cost somewhat.)
// (one line). The shared 2-core build machine is noisy: both runs are in the same process, back to back.
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/model.h"
#include "core/model/weights.h"
#include "core/runtime/runtime.h"
#include "core/runtime/version_source.h"
#include "core/tokenizer/byte_tokenizer.h"
#include "core/train/backbone.h"
#include "ops/bench/bench_check.h"

namespace tessera::bench {
namespace {

using Clock = std::chrono::steady_clock;
using runtime::GenerateParams;
using runtime::GenerateResult;
using runtime::Runtime;

class BaseOnly : public runtime::VersionSource {
 public:
  absl::StatusOr<int64_t> LiveVersion(const std::string&) override { return 0; }
  absl::StatusOr<runtime::VersionBlob> LoadVersion(const std::string& tenant, int64_t version) override {
    return absl::NotFoundError(absl::StrCat("bench: tenant ", tenant, " has no version ", version));
  }
};

struct Args {
  std::string backbone = "builtin:tiny";
  int streams = 6;
  int requests = 4;
  int decode_tokens = 48;
  int long_prompts = 4;
  int long_tokens = 1500;
  int64_t budget = 64;
};

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Process CPU time (every thread), ms: a step's CPU time is what its wall time would be on idle cores,
// without the preemptions of a shared machine.
double CpuMs() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

double Pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}

std::string Text(size_t n, uint32_t seed) {
  static const char* kWords[] = {"tokens", "flow", "while", "long", "prompts", "wait", "their", "turn",
                                 "and", "each", "step", "keeps", "a", "budget", "of", "work"};
  std::string s;
  uint32_t x = seed * 2654435761u + 7;
  while (s.size() < n) {
    x = x * 1664525u + 1013904223u;
    s += kWords[(x >> 16) % 16];
    s += ' ';
  }
  s.resize(n);
  return s;
}

struct RunResult {
  std::vector<double> itl_ms;
  std::vector<double> itl_cpu_ms;  // the same samples in process CPU time
  std::vector<double> long_ttft_ms;
  double tok_s = 0;
  std::map<std::string, std::vector<int32_t>> tokens;  // by request name
  int64_t max_step_tokens_seen = 0;
};

RunResult RunLoad(const Model* model, const Tokenizer* tok, runtime::VersionSource* src, const Args& a,
                  int64_t max_step_tokens) {
  RunResult out;
  std::mutex mu;
  int64_t last_step_ns = 0;
  double last_step_cpu = 0;
  std::atomic<int64_t> long_prefill_done{0};
  runtime::RuntimeOptions o;
  o.max_batch = a.streams + 1;
  o.kv_capacity = std::min<int64_t>(2048, model->config().max_position_embeddings);
  o.max_step_tokens = max_step_tokens;
  o.max_prefill_tokens_per_step = std::max<int64_t>(4096, a.long_tokens);
  o.on_step = [&](const runtime::StepInfo& s) {
    const int64_t now = Clock::now().time_since_epoch().count();
    const double cpu = CpuMs();
    std::lock_guard<std::mutex> lock(mu);
    const int64_t decodes = s.sequences - s.prefill_sequences;
    if (last_step_ns > 0 && decodes > 0) {
      for (int64_t i = 0; i < decodes; ++i) {
        out.itl_ms.push_back(static_cast<double>(now - last_step_ns) / 1e6);
        out.itl_cpu_ms.push_back(cpu - last_step_cpu);
      }
    }
    last_step_ns = now;
    last_step_cpu = cpu;
    out.max_step_tokens_seen = std::max(out.max_step_tokens_seen, s.tokens);
  };
  std::unique_ptr<Runtime> rt = Must(Runtime::Create(model, tok, src, o), "Runtime::Create");
  std::atomic<int64_t> generated{0};
  auto record = [&](const std::string& name, const GenerateResult& r) {
    generated.fetch_add(r.completion_tokens);
    std::lock_guard<std::mutex> lock(mu);
    out.tokens[name] = r.tokens;
  };
  const Clock::time_point t0 = Clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < a.streams; ++c) {
    clients.emplace_back([&, c] {
      for (int k = 0; k < a.requests; ++k) {
        GenerateParams p;
        p.prompt = Text(10 + (c * 17 + k * 11) % 50, 100 * c + k);
        p.max_tokens = a.decode_tokens;
        record(absl::StrCat("s", c, "-", k), Must(rt->Generate("bench", std::nullopt, p), "Generate"));
      }
    });
  }
  clients.emplace_back([&] {
    for (int k = 0; k < a.long_prompts; ++k) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      GenerateParams p;
      p.prompt = Text(static_cast<size_t>(a.long_tokens - 1), 9000 + k);
      p.max_tokens = 4;
      std::atomic<bool> first{false};
      const Clock::time_point s0 = Clock::now();
      double ttft = 0;
      // The first delta marks the first token (whitespace-only text may be held back; then the end does).
      GenerateResult r = Must(rt->Generate("bench", std::nullopt, p,
                                           [&](std::string_view) {
                                             if (!first.exchange(true)) ttft = Ms(Clock::now() - s0);
                                             return true;
                                           }),
                              "Generate");
      if (!first.load()) ttft = Ms(Clock::now() - s0);
      {
        std::lock_guard<std::mutex> lock(mu);
        out.long_ttft_ms.push_back(ttft);
      }
      record(absl::StrCat("long-", k), r);
    }
  });
  for (auto& t : clients) t.join();
  out.tok_s = static_cast<double>(generated.load()) / (Ms(Clock::now() - t0) / 1000.0);
  rt->Shutdown();
  return out;
}

int Main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--backbone") a.backbone = next();
    else if (arg == "--streams") a.streams = std::atoi(next().c_str());
    else if (arg == "--requests") a.requests = std::atoi(next().c_str());
    else if (arg == "--decode-tokens") a.decode_tokens = std::atoi(next().c_str());
    else if (arg == "--long") a.long_prompts = std::atoi(next().c_str());
    else if (arg == "--long-tokens") a.long_tokens = std::atoi(next().c_str());
    else if (arg == "--max-step-tokens") a.budget = std::atoll(next().c_str());
    else if (arg == "--quick") {
      a.streams = 3;
      a.requests = 2;
      a.decode_tokens = 24;
      a.long_prompts = 2;
      a.long_tokens = 600;
    } else {
      std::fprintf(stderr,
                   "usage: bench_chunked_prefill [--backbone builtin:tiny|random:tiny] [--streams N] [--requests N] "
                   "[--decode-tokens N] [--long N] [--long-tokens N] [--max-step-tokens N] [--quick]\n");
      return 2;
    }
  }
  if (a.streams < 1 || a.requests < 1 || a.decode_tokens < 2 || a.long_prompts < 1 || a.long_tokens < 2 ||
      a.budget < 1) {
    std::fprintf(stderr, "bench_chunked_prefill: every count must be >= 1 (--decode-tokens, --long-tokens >= 2)\n");
    return 2;
  }
  std::unique_ptr<Backend> be = MakeCpuBackend();
  std::unique_ptr<Model> model;
  if (a.backbone == "random:tiny") {
    const ModelConfig c = ModelConfig::BuiltinTiny();
    model = Must(Model::Create(c, Must(ModelWeights::RandomInit(c, 42, be.get()), "RandomInit"), be.get()),
                 "Model::Create");
  } else {
    absl::StatusOr<train::Backbone> b = train::LoadBackbone(a.backbone, be.get());
    if (!b.ok()) {
      std::fprintf(stderr, "bench_chunked_prefill: %s: %s (use --backbone random:tiny)\n", a.backbone.c_str(),
                   std::string(b.status().message()).c_str());
      return 1;
    }
    model = Must(Model::Create(b->config, std::move(b->weights), be.get()), "Model::Create");
  }
  if (a.long_tokens + 4 > std::min<int64_t>(2048, model->config().max_position_embeddings)) {
    std::fprintf(stderr, "bench_chunked_prefill: --long-tokens %d does not fit the context\n", a.long_tokens);
    return 2;
  }
  ByteTokenizer tok;
  BaseOnly src;
  std::printf("backbone %s, %s: %d streams x %d requests of %d tokens, %d long prompts of %d tokens\n",
              a.backbone.c_str(), be->name().c_str(), a.streams, a.requests, a.decode_tokens, a.long_prompts,
              a.long_tokens);
  const RunResult off = RunLoad(model.get(), &tok, &src, a, 0);
  const RunResult on = RunLoad(model.get(), &tok, &src, a, a.budget);
  int mismatches = 0;
  for (const auto& [name, tokens] : off.tokens) {
    auto it = on.tokens.find(name);
    if (it == on.tokens.end() || it->second != tokens) {
      ++mismatches;
      std::fprintf(stderr, "MISMATCH %s: %zu tokens off vs %zu on\n", name.c_str(), tokens.size(),
                   it == on.tokens.end() ? size_t{0} : it->second.size());
    }
  }
  auto median = [](const std::vector<double>& v) { return Pct(v, 0.5); };
  for (const auto* r : {&off, &on}) {
    std::printf("%-24s ITL p50 %.2f ms, p99 %.2f ms, max %.2f ms (%zu samples; in CPU time p50 %.2f, p99 %.2f); "
                "long-prompt TTFT median %.1f ms; %.1f completion tok/s; largest step %lld tokens\n",
                r == &off ? "chunked prefill off:" : absl::StrCat("max-step-tokens ", a.budget, ":").c_str(),
                Pct(r->itl_ms, 0.5), Pct(r->itl_ms, 0.99), Pct(r->itl_ms, 1.0), r->itl_ms.size(),
                Pct(r->itl_cpu_ms, 0.5), Pct(r->itl_cpu_ms, 0.99), median(r->long_ttft_ms), r->tok_s,
                static_cast<long long>(r->max_step_tokens_seen));
  }
  std::printf("outputs: %d mismatches between chunked prefill off and on\n", mismatches);
  std::printf(
      "itl_p50_off_ms=%.3f itl_p50_on_ms=%.3f itl_p99_off_ms=%.3f itl_p99_on_ms=%.3f cpu_itl_p99_off_ms=%.3f "
      "cpu_itl_p99_on_ms=%.3f wall_ratio=%.2f long_ttft_off_ms=%.1f long_ttft_on_ms=%.1f tok_s_off=%.1f "
      "tok_s_on=%.1f outputs_equal=%s ratio=%.2f\n",
      Pct(off.itl_ms, 0.5), Pct(on.itl_ms, 0.5), Pct(off.itl_ms, 0.99), Pct(on.itl_ms, 0.99),
      Pct(off.itl_cpu_ms, 0.99), Pct(on.itl_cpu_ms, 0.99), Pct(off.itl_ms, 0.99) / Pct(on.itl_ms, 0.99),
      median(off.long_ttft_ms), median(on.long_ttft_ms), off.tok_s, on.tok_s, mismatches == 0 ? "true" : "false",
      Pct(off.itl_cpu_ms, 0.99) / Pct(on.itl_cpu_ms, 0.99));
  return mismatches == 0 ? 0 : 1;
}

}  // namespace
}  // namespace tessera::bench

int main(int argc, char** argv) { return tessera::bench::Main(argc, argv); }
