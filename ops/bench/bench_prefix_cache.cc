// bench_prefix_cache: time to first token and throughput of the runtime with the prefix cache off and on
// (issue 20 section 1), on builtin:tiny (random:tiny weights when the checkpoint is absent or asked for).
//
// Workloads, each run once with the cache off and once on (a fresh Runtime each, same model):
//   1. system prompt: BOS + a 511-byte system prompt (512 tokens = 32 blocks) + a short question
//      ("Q<i>: ...", 20-30 bytes), one request at a time, greedy, --max-tokens tokens. With the cache on
//      the first request computes the system prompt and every later one restores it (a hit of 512
//      positions) and prefills only its question.
//   2. multi-turn chat: --conversations conversations of --turns turns; each turn's prompt is the whole
//      history (a 200-byte opening, earlier questions and the model's answers) plus a new question, one
//      request at a time. With the cache on each turn restores what the previous turn computed (its
//      prompt and its answer), so the hit grows with the history.
//   3. throughput: workload 1's questions sent by --clients concurrent clients (continuous batching), and
//      the peak KV blocks the running sequences hold (restored system prompts share one copy).
// Time to first token (TTFT) = from the Generate call to the end of the scheduler step that prefilled the
// request and sampled its first token (RuntimeOptions::on_step; the requests of 1 and 2 run alone).
// Every request's generated token ids are compared between cache off and on (bit for bit: the same ids,
// hence the same text); any difference is printed and the exit status is 1.
//
// TTFT is also measured in process CPU time (every thread, from the call to that step's end): on a shared
// machine, where this process may get a few percent of a core, wall time measures the neighbours; CPU time
// measures the work, which is what the wall time is on idle cores. `ratio` is the CPU-time TTFT speedup.
//
// Last line (one line):
//   sys_ttft_off_ms=<median wall> sys_ttft_hit_ms=<median wall> sys_wall_ratio=<off/hit>
//   sys_ttft_cpu_off_ms=<median> sys_ttft_cpu_hit_ms=<median> chat_ttft_cpu_off_ms=<median>
//   chat_ttft_cpu_on_ms=<median> chat_cpu_ratio=<off/on> rps_off=<x> rps_on=<x>
//   cpu_per_req_ratio=<off/on> kv_peak_blocks_off=<n> kv_peak_blocks_on=<n> outputs_equal=<true|false>
//   ratio=<sys_ttft_cpu_off / sys_ttft_cpu_hit>
// Medians; off and on measured in the same run.
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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
using runtime::RuntimeOptions;

// Every tenant serves the base model.
class BaseOnly : public runtime::VersionSource {
 public:
  absl::StatusOr<int64_t> LiveVersion(const std::string&) override { return 0; }
  absl::StatusOr<runtime::VersionBlob> LoadVersion(const std::string& tenant, int64_t version) override {
    return absl::NotFoundError(absl::StrCat("bench: tenant ", tenant, " has no version ", version));
  }
};

struct Args {
  std::string backbone = "builtin:tiny";
  int questions = 24;
  int conversations = 4;
  int turns = 5;
  int clients = 8;
  int max_tokens = 16;
  int64_t prefix_cache_bytes = int64_t{64} << 20;
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// CPU time of the whole process (every thread), in ms: on a shared machine it measures the work a request
// took far more steadily than wall time.
double CpuMs() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// Deterministic filler text of exactly `n` bytes (printable, word-like).
std::string Filler(size_t n, uint32_t seed) {
  static const char* kWords[] = {"the", "model", "answers", "briefly", "and", "never", "invents", "facts",
                                 "about", "tenants", "experts", "versions", "when", "asked", "it", "says"};
  std::string s;
  uint32_t x = seed * 2654435761u + 1;
  while (s.size() < n) {
    x = x * 1664525u + 1013904223u;
    s += kWords[(x >> 16) % 16];
    s += (x >> 8) % 7 == 0 ? ". " : " ";
  }
  s.resize(n);
  return s;
}

struct Server {
  std::unique_ptr<Runtime> rt;
  std::atomic<int64_t> prefill_done_ns{0};  // end of the last step that prefilled something
  std::atomic<double> prefill_done_cpu{0};  // the process CPU time then (CpuMs)
};

std::unique_ptr<Server> Start(const Model* model, const Tokenizer* tok, runtime::VersionSource* src,
                              const std::string& digest, int64_t prefix_bytes, int max_batch) {
  auto s = std::make_unique<Server>();
  RuntimeOptions o;
  o.max_batch = max_batch;
  o.kv_capacity = std::min<int64_t>(2048, model->config().max_position_embeddings);
  o.prefix_cache_bytes = prefix_bytes;
  o.backbone_digest = digest;
  Server* raw = s.get();
  o.on_step = [raw](const runtime::StepInfo& info) {
    if (info.prefill_sequences > 0) {
      raw->prefill_done_ns.store(Clock::now().time_since_epoch().count());
      raw->prefill_done_cpu.store(CpuMs());
    }
  };
  s->rt = Must(Runtime::Create(model, tok, src, o), "Runtime::Create");
  return s;
}

struct Timed {
  GenerateResult result;
  double ttft_ms = 0;
  double total_ms = 0;
  double ttft_cpu_ms = 0;  // process CPU time from the call to the first token (the request runs alone)
};

// One request alone: TTFT from the step hook.
Timed RunOne(Server& s, const std::string& prompt, int max_tokens) {
  GenerateParams p;
  p.prompt = prompt;
  p.max_tokens = max_tokens;
  s.prefill_done_ns.store(0);
  const double c0 = CpuMs();
  const Clock::time_point t0 = Clock::now();
  Timed t;
  t.result = Must(s.rt->Generate("bench", std::nullopt, p), "Generate");
  t.total_ms = Ms(Clock::now() - t0);
  t.ttft_cpu_ms = s.prefill_done_cpu.load() - c0;
  const int64_t done = s.prefill_done_ns.load();
  t.ttft_ms = Ms(Clock::duration(done) - t0.time_since_epoch());
  return t;
}

int mismatches = 0;
void Compare(const char* what, int i, const GenerateResult& off, const GenerateResult& on) {
  if (off.tokens == on.tokens) return;
  ++mismatches;
  std::fprintf(stderr, "MISMATCH %s %d: off %zu tokens \"%s\" vs on %zu tokens \"%s\"\n", what, i, off.tokens.size(),
               off.text.c_str(), on.tokens.size(), on.text.c_str());
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
    else if (arg == "--questions") a.questions = std::atoi(next().c_str());
    else if (arg == "--conversations") a.conversations = std::atoi(next().c_str());
    else if (arg == "--turns") a.turns = std::atoi(next().c_str());
    else if (arg == "--clients") a.clients = std::atoi(next().c_str());
    else if (arg == "--max-tokens") a.max_tokens = std::atoi(next().c_str());
    else if (arg == "--prefix-cache-bytes") a.prefix_cache_bytes = std::atoll(next().c_str());
    else if (arg == "--quick") {
      a.questions = 6;
      a.conversations = 2;
      a.turns = 3;
      a.max_tokens = 8;
    } else {
      std::fprintf(stderr,
                   "usage: bench_prefix_cache [--backbone builtin:tiny|random:tiny] [--questions N] "
                   "[--conversations N] [--turns N] [--clients N] [--max-tokens N] [--prefix-cache-bytes N] "
                   "[--quick]\n");
      return 2;
    }
  }
  if (a.questions < 2 || a.conversations < 1 || a.turns < 2 || a.clients < 1 || a.max_tokens < 1) {
    std::fprintf(stderr, "bench_prefix_cache: --questions >= 2, --turns >= 2, the others >= 1\n");
    return 2;
  }
  std::unique_ptr<Backend> be = MakeCpuBackend();
  std::unique_ptr<Model> model;
  std::string digest;
  if (a.backbone == "random:tiny") {
    const ModelConfig c = ModelConfig::BuiltinTiny();
    model = Must(Model::Create(c, Must(ModelWeights::RandomInit(c, 42, be.get()), "RandomInit"), be.get()),
                 "Model::Create");
    digest = "random:tiny/42";
  } else {
    absl::StatusOr<train::Backbone> b = train::LoadBackbone(a.backbone, be.get());
    if (!b.ok()) {
      std::fprintf(stderr, "bench_prefix_cache: %s: %s (use --backbone random:tiny)\n", a.backbone.c_str(),
                   std::string(b.status().message()).c_str());
      return 1;
    }
    digest = b->sha256;
    model = Must(Model::Create(b->config, std::move(b->weights), be.get()), "Model::Create");
  }
  ByteTokenizer tok;
  BaseOnly src;
  std::printf("backbone %s (%s), %s; prefix cache %lld bytes, block 16 tokens\n", a.backbone.c_str(),
              digest.substr(0, 12).c_str(), be->name().c_str(), static_cast<long long>(a.prefix_cache_bytes));

  // ---- 1. shared system prompt ----
  const std::string system = Filler(511, 1);  // + BOS = 512 tokens
  std::vector<std::string> questions;
  for (int i = 0; i < a.questions; ++i) {
    questions.push_back(absl::StrCat("\nQ", i, ": what is ", 3 + i * 7 % 50, " plus ", 11 + i * 13 % 40, "?\nA:"));
  }
  std::vector<double> ttft[2], ttft_cpu[2];
  std::vector<double> first_ttft(2);
  std::vector<GenerateResult> sys_out[2];
  for (int on = 0; on < 2; ++on) {
    auto s = Start(model.get(), &tok, &src, digest, on ? a.prefix_cache_bytes : 0, a.clients);
    for (int i = 0; i < a.questions; ++i) {
      Timed t = RunOne(*s, system + questions[i], a.max_tokens);
      if (i == 0) {
        first_ttft[on] = t.ttft_ms;  // with the cache on: the miss that fills it
      } else {
        ttft[on].push_back(t.ttft_ms);
        ttft_cpu[on].push_back(t.ttft_cpu_ms);
        if (on && t.result.cached_tokens != 512) {
          std::fprintf(stderr, "bench_prefix_cache: question %d restored %d positions, expected 512\n", i,
                       t.result.cached_tokens);
          return 1;
        }
      }
      sys_out[on].push_back(std::move(t.result));
    }
  }
  for (int i = 0; i < a.questions; ++i) Compare("system-prompt question", i, sys_out[0][i], sys_out[1][i]);
  const double sys_off = Median(ttft[0]), sys_hit = Median(ttft[1]);
  const double cpu_off = Median(ttft_cpu[0]), cpu_hit = Median(ttft_cpu[1]);
  std::printf("system prompt (512 tokens) + question, %d requests one at a time:\n", a.questions);
  std::printf("  TTFT cache off: median %.2f ms | cache on: first (miss) %.2f ms, hits median %.2f ms -> %.2fx\n",
              sys_off, first_ttft[1], sys_hit, sys_off / sys_hit);
  std::printf("  TTFT in process CPU time: cache off median %.2f ms | hits median %.2f ms -> %.2fx\n", cpu_off,
              cpu_hit, cpu_off / cpu_hit);

  // ---- 2. multi-turn chat ----
  std::vector<double> chat_ttft[2], chat_cpu[2];
  std::vector<GenerateResult> chat_out[2];
  std::vector<int> chat_cached;
  for (int on = 0; on < 2; ++on) {
    auto s = Start(model.get(), &tok, &src, digest, on ? a.prefix_cache_bytes : 0, a.clients);
    for (int c = 0; c < a.conversations; ++c) {
      std::string history = absl::StrCat("Conversation ", c, ". ", Filler(200, 100 + c));
      for (int t = 0; t < a.turns; ++t) {
        history += absl::StrCat("\nUser: turn ", t, ", tell me about ", Filler(24, 1000 * c + t), "?\nAssistant:");
        // The off run decides the history (its answers); the on run replays the same prompts.
        const size_t k = chat_out[on].size();
        Timed r = RunOne(*s, history, a.max_tokens);
        if (t > 0) {
          chat_ttft[on].push_back(r.ttft_ms);
          chat_cpu[on].push_back(r.ttft_cpu_ms);
        }
        if (on) chat_cached.push_back(r.result.cached_tokens);
        history += on ? chat_out[0][k].text : r.result.text;
        chat_out[on].push_back(std::move(r.result));
      }
    }
  }
  for (size_t i = 0; i < chat_out[0].size(); ++i) Compare("chat turn", static_cast<int>(i), chat_out[0][i], chat_out[1][i]);
  const double chat_off = Median(chat_ttft[0]), chat_on = Median(chat_ttft[1]);
  const double chat_cpu_off = Median(chat_cpu[0]), chat_cpu_on = Median(chat_cpu[1]);
  int64_t prompt_sum = 0, cached_sum = 0;
  for (size_t i = 0; i < chat_out[1].size(); ++i) {
    prompt_sum += chat_out[1][i].prompt_tokens;
    cached_sum += chat_cached[i];
  }
  std::printf("multi-turn chat, %d conversations x %d turns (later turns' TTFT):\n", a.conversations, a.turns);
  std::printf("  TTFT cache off: median %.2f ms | cache on: median %.2f ms -> %.2fx; %.1f%% of prompt tokens restored\n",
              chat_off, chat_on, chat_off / chat_on, 100.0 * static_cast<double>(cached_sum) / prompt_sum);
  std::printf("  TTFT in process CPU time: cache off median %.2f ms | cache on %.2f ms -> %.2fx\n", chat_cpu_off,
              chat_cpu_on, chat_cpu_off / chat_cpu_on);

  // ---- 3. throughput with concurrent clients ----
  double rps[2] = {0, 0}, tok_s[2] = {0, 0}, cpu_per_req[2] = {0, 0};
  int64_t peak_blocks[2] = {0, 0};
  for (int on = 0; on < 2; ++on) {
    auto s = Start(model.get(), &tok, &src, digest, on ? a.prefix_cache_bytes : 0, a.clients);
    if (on) RunOne(*s, system + questions[0], 1);  // the system prompt is cached, as in steady state
    std::atomic<int> next{0};
    std::atomic<int64_t> generated{0};
    std::vector<GenerateResult> outs(questions.size());
    const Clock::time_point t0 = Clock::now();
    const double c0 = CpuMs();
    // KV memory of the running sequences: distinct pool blocks in use, less those only the prefix cache
    // holds (it gives them back on demand). A system prompt restored by 8 sequences counts once.
    std::atomic<bool> sampling{true};
    std::thread sampler([&] {
      while (sampling.load()) {
        const runtime::RuntimeStatus st = s->rt->Status();
        const int64_t cache_only = st.prefix_cache.blocks - st.prefix_cache.shared_blocks;
        peak_blocks[on] = std::max(peak_blocks[on], st.kv_blocks_total - st.kv_blocks_free - cache_only);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });
    std::vector<std::thread> clients;
    for (int c = 0; c < a.clients; ++c) {
      clients.emplace_back([&] {
        for (int i; (i = next.fetch_add(1)) < static_cast<int>(questions.size());) {
          GenerateParams p;
          p.prompt = system + questions[i];
          p.max_tokens = a.max_tokens;
          outs[i] = Must(s->rt->Generate("bench", std::nullopt, p), "Generate");
          generated.fetch_add(outs[i].completion_tokens);
        }
      });
    }
    for (auto& t : clients) t.join();
    const double secs = Ms(Clock::now() - t0) / 1000.0;
    sampling.store(false);
    sampler.join();
    rps[on] = static_cast<double>(questions.size()) / secs;
    cpu_per_req[on] = (CpuMs() - c0) / static_cast<double>(questions.size());
    tok_s[on] = static_cast<double>(generated.load()) / secs;
    for (size_t i = 0; i < questions.size(); ++i) Compare("concurrent question", static_cast<int>(i), sys_out[0][i], outs[i]);
  }
  std::printf("throughput, %d clients, %d requests of 512+q prompt tokens and %d completion tokens:\n", a.clients,
              a.questions, a.max_tokens);
  std::printf("  cache off %.1f req/s (%.1f completion tok/s) | cache on %.1f req/s (%.1f tok/s) -> %.2fx\n", rps[0],
              tok_s[0], rps[1], tok_s[1], rps[1] / rps[0]);
  std::printf("  process CPU time per request: cache off %.2f ms | cache on %.2f ms -> %.2fx\n", cpu_per_req[0],
              cpu_per_req[1], cpu_per_req[0] / cpu_per_req[1]);
  std::printf("  KV blocks (16 positions) held by the running sequences, peak: cache off %lld | cache on %lld "
              "(restored prompts share their blocks) -> %.2fx less\n",
              static_cast<long long>(peak_blocks[0]), static_cast<long long>(peak_blocks[1]),
              static_cast<double>(peak_blocks[0]) / static_cast<double>(std::max<int64_t>(1, peak_blocks[1])));
  std::printf("outputs: %d mismatches between cache off and on\n", mismatches);
  std::printf(
      "sys_ttft_off_ms=%.3f sys_ttft_hit_ms=%.3f sys_wall_ratio=%.2f sys_ttft_cpu_off_ms=%.3f sys_ttft_cpu_hit_ms=%.3f "
      "chat_ttft_cpu_off_ms=%.3f chat_ttft_cpu_on_ms=%.3f chat_cpu_ratio=%.2f rps_off=%.2f rps_on=%.2f "
      "cpu_per_req_ratio=%.2f kv_peak_blocks_off=%lld kv_peak_blocks_on=%lld outputs_equal=%s ratio=%.2f\n",
      sys_off, sys_hit, sys_off / sys_hit, cpu_off, cpu_hit, chat_cpu_off, chat_cpu_on, chat_cpu_off / chat_cpu_on,
      rps[0], rps[1], cpu_per_req[0] / cpu_per_req[1], static_cast<long long>(peak_blocks[0]),
      static_cast<long long>(peak_blocks[1]), mismatches == 0 ? "true" : "false", cpu_off / cpu_hit);
  return mismatches == 0 ? 0 : 1;
}

}  // namespace
}  // namespace tessera::bench

int main(int argc, char** argv) { return tessera::bench::Main(argc, argv); }
