// bench_decode: prefill and batched decode of an HF checkpoint on the CPU backend, measured the way
// llama.cpp's `llama-batched-bench` measures them, so that ops/bench/bench_llamacpp.py can put the two
// engines side by side on the same checkpoint (issue 17 §2).
//
// Protocol (batched-bench's, without a shared prompt): a warm-up forward of 16 tokens; then for each
// parallel count B in --npl: empty KV caches, B sequences of --npp random tokens prefilled in one forward
// (timed: S_PP = B * npp / t_pp), then --ntg decode steps, each one forward of B sequences x 1 token
// (timed: S_TG = B * ntg / t_tg). Like batched-bench, each step's next tokens are random (no sampling);
// unlike it, every step also copies its logits to the host (what a server does before sampling).
// The KV caches are paged (one KvBlockPool of 16-token blocks, as tessera-server's), so decode reads keys
// through the block table as served requests do.
//
// Threads: --threads N (default: TESSERA_NUM_THREADS, else every core) sizes Tessera's pool and the
// BLAS's threads (core/util/thread_budget.h) before either starts.
//
// Limits: decode is memory-bound, so each B's decode is also given as the weight bytes one step reads
// (attention, router and LM head once, plus the distinct experts the step's B tokens route to, expected
// under uniform routing: E (1 - (1 - k/E)^B) per layer) per step time, against the machine's read
// bandwidth measured in the same run (ops/bench/memory_probe.h).
//
// Output: batched-bench's table columns per B, the limits, the peak RSS, and a last line
//   decode_b1_tok_s=<x> decode_b8_tok_s=<x> prefill_tok_s=<x> rss_mb=<x> decode_b1_gbps=<x> mem_gbps=<x>
// (b8: the largest B in --npl; prefill: the B=1 prefill).
//
// Usage: bench_decode --model DIR [--dtype f32|bf16] [--npp 128] [--ntg 64] [--npl 1,8] [--threads N]
//                     [--reps R] [--profile]
//   R: each B is run R times, best kept (default 2); --profile: a per-op time table of the decode steps
//   (ProfilingBackend, enabled only while decoding; it synchronizes per op, so its rows are not timings).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "core/backend/backend.h"
#include "core/backend/cpu/cpu_blas.h"
#include "core/backend/profiling_backend.h"
#include "core/model/config.h"
#include "core/model/kv_block_pool.h"
#include "core/model/kv_cache.h"
#include "core/model/model.h"
#include "core/model/weights.h"
#include "core/util/parallel.h"
#include "core/util/thread_budget.h"
#include "ops/bench/bench_clock.h"
#include "ops/bench/memory_probe.h"

namespace tessera {
namespace {

using bench::Now;
using bench::PeakRssMb;

[[noreturn]] void Die(const std::string& what, const absl::Status& s) {
  std::fprintf(stderr, "bench_decode: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

struct Row {
  int64_t b = 0;
  double t_pp = 1e30, t_tg = 1e30;
};

// One batched-bench row: prefill b sequences of npp tokens, then ntg steps of b tokens.
Row RunOnce(Model& model, const ModelConfig& c, KvBlockPool* pool, int64_t b, int64_t npp, int64_t ntg,
            std::mt19937& rng, Backend* be, ProfilingBackend* profile) {
  std::vector<std::unique_ptr<KvCache>> caches;
  for (int64_t i = 0; i < b; ++i) {
    auto cache = KvCache::CreatePaged(pool, npp + ntg);
    if (!cache.ok()) Die("kv cache", cache.status());
    caches.push_back(*std::move(cache));
  }
  auto token = [&] { return static_cast<int32_t>(rng() % c.vocab_size); };
  std::vector<std::vector<int32_t>> prompts(b, std::vector<int32_t>(npp));
  for (auto& p : prompts) std::generate(p.begin(), p.end(), token);
  ForwardOptions opt;
  opt.logits = LogitsMode::kLast;
  Row row;
  row.b = b;

  std::vector<SequenceInput> in;
  for (int64_t i = 0; i < b; ++i) in.push_back({prompts[i], nullptr, caches[i].get()});
  double t0 = Now();
  auto pre = model.Forward(in, opt);
  if (!pre.ok()) Die("prefill", pre.status());
  auto logits = be->ToHostF32(pre->logits);
  if (!logits.ok()) Die("logits", logits.status());
  row.t_pp = Now() - t0;

  std::vector<int32_t> next(b);
  if (profile != nullptr) profile->set_enabled(true);
  t0 = Now();
  for (int64_t s = 0; s < ntg; ++s) {
    std::generate(next.begin(), next.end(), token);
    in.clear();
    for (int64_t i = 0; i < b; ++i) in.push_back({absl::MakeConstSpan(&next[i], 1), nullptr, caches[i].get()});
    auto r = model.Forward(in, opt);
    if (!r.ok()) Die("decode", r.status());
    auto l = be->ToHostF32(r->logits);
    if (!l.ok()) Die("logits", l.status());
  }
  row.t_tg = Now() - t0;
  if (profile != nullptr) profile->set_enabled(false);
  return row;
}

int Main(int argc, char** argv) {
  std::string model_dir, dtype_name = "f32", npl_list = "1,8";
  int64_t npp = 128, ntg = 64, reps = 2, threads = 0;
  bool profile = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has = i + 1 < argc;
    bool ok = true;
    if (a == "--model" && has) model_dir = argv[++i];
    else if (a == "--dtype" && has) dtype_name = argv[++i];
    else if (a == "--npl" && has) npl_list = argv[++i];
    else if (a == "--npp" && has) ok = absl::SimpleAtoi(argv[++i], &npp) && npp > 0;
    else if (a == "--ntg" && has) ok = absl::SimpleAtoi(argv[++i], &ntg) && ntg > 0;
    else if (a == "--reps" && has) ok = absl::SimpleAtoi(argv[++i], &reps) && reps > 0;
    else if (a == "--profile") profile = true;
    else if (a == "--threads" && has) ok = absl::SimpleAtoi(argv[++i], &threads) && threads > 0;
    else ok = false;
    if (!ok) {
      std::fprintf(stderr,
                   "usage: bench_decode --model DIR [--dtype f32|bf16] [--npp N] [--ntg N] [--npl 1,8] "
                   "[--threads N] [--reps R] [--profile]\n  (bad or unknown argument: %s)\n",
                   a.c_str());
      return 2;
    }
  }
  if (model_dir.empty() || (dtype_name != "f32" && dtype_name != "bf16")) {
    std::fprintf(stderr, "bench_decode: --model DIR is required; --dtype is f32 or bf16\n");
    return 2;
  }
  std::vector<int64_t> npl;
  for (absl::string_view p : absl::StrSplit(npl_list, ',')) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(p, &v) || v <= 0) {
      std::fprintf(stderr, "bench_decode: --npl wants positive counts, got '%s'\n", npl_list.c_str());
      return 2;
    }
    npl.push_back(v);
  }
  if (threads > 0) {
    if (absl::Status s = SetThreadBudget(static_cast<int>(threads)); !s.ok()) Die("--threads", s);
  }
  const DType dtype = dtype_name == "bf16" ? DType::kBF16 : DType::kF32;
  // Before anything starts threads (and in a child, off this process's peak RSS).
  const double mem_gbps = bench::MemoryReadGbpsInChild();

  std::unique_ptr<Backend> be = MakeCpuBackend();
  std::printf("memory read probe: %.1f GB/s\n", mem_gbps);
  std::printf("bench_decode: backend %s, %d threads (%s), dtype %s\ncpu: %s\nkernels: %s\n", be->name().c_str(),
              NumThreads(), ThreadBudgetString().c_str(), dtype_name.c_str(), cpu::CpuFeaturesString().c_str(),
              cpu::CpuKernelSetString().c_str());
  auto config = ModelConfig::FromFile(model_dir);
  if (!config.ok()) Die("config", config.status());
  const ModelConfig& c = *config;
  double t0 = Now();
  auto weights = ModelWeights::LoadFromPath(c, model_dir, be.get(), dtype);
  if (!weights.ok()) Die("weights", weights.status());
  ProfilingBackend prof(be.get());
  Backend* run_be = profile ? static_cast<Backend*>(&prof) : be.get();
  auto model = Model::Create(c, *std::move(weights), run_be);
  if (!model.ok()) Die("model", model.status());
  std::printf("model %s: hidden %lld, layers %lld, experts %lld top-%lld width %lld, vocab %lld, %.1fM params; "
              "loaded in %.2fs\n",
              model_dir.c_str(), (long long)c.hidden_size, (long long)c.num_layers, (long long)c.num_experts,
              (long long)c.top_k, (long long)c.expert_dim, (long long)c.vocab_size, c.NumParameters() / 1e6,
              Now() - t0);

  const int64_t max_b = *std::max_element(npl.begin(), npl.end());
  const int64_t block_tokens = 16;
  auto pool = KvBlockPool::Create(c, max_b * KvBlockPool::BlocksFor(npp + ntg, block_tokens), block_tokens,
                                  run_be, dtype);
  if (!pool.ok()) Die("kv pool", pool.status());
  std::mt19937 rng(7);
  {  // warm-up, as batched-bench: 16 tokens, standalone
    std::vector<int32_t> w(16);
    for (auto& t : w) t = static_cast<int32_t>(rng() % c.vocab_size);
    SequenceInput in[1] = {{w, nullptr, nullptr}};
    if (auto r = (*model)->Forward(in); !r.ok()) Die("warm-up", r.status());
  }

  std::printf("\n|%6s | %6s | %4s | %6s | %8s | %8s | %8s | %8s |\n", "PP", "TG", "B", "N_KV", "T_PP s", "S_PP t/s",
              "T_TG s", "S_TG t/s");
  std::vector<Row> rows;
  for (int64_t b : npl) {
    Row best;
    for (int64_t r = 0; r < reps; ++r) {
      if (profile) prof.Reset();
      Row row = RunOnce(**model, c, pool->get(), b, npp, ntg, rng, run_be, profile ? &prof : nullptr);
      if (profile) std::printf("B=%lld decode ops:\n%s", (long long)b, prof.Report(row.t_tg).c_str());
      best.b = b;
      best.t_pp = std::min(best.t_pp, row.t_pp);
      best.t_tg = std::min(best.t_tg, row.t_tg);
    }
    std::printf("|%6lld | %6lld | %4lld | %6lld | %8.3f | %8.2f | %8.3f | %8.2f |\n", (long long)npp, (long long)ntg,
                (long long)b, (long long)(b * (npp + ntg)), best.t_pp, b * npp / best.t_pp, best.t_tg,
                b * ntg / best.t_tg);
    rows.push_back(best);
  }
  // Weight bytes one decode step of B tokens reads (see the file comment).
  const double elem = dtype == DType::kBF16 ? 2.0 : 4.0, d = c.hidden_size;
  auto step_bytes = [&](int64_t b) {
    const double touched =
        c.num_experts * (1.0 - std::pow(1.0 - static_cast<double>(c.top_k) / c.num_experts, static_cast<double>(b)));
    return elem * (c.num_layers * (d * (c.q_dim() + 2 * c.kv_dim()) + c.q_dim() * d + d * c.num_experts +
                                   touched * 3 * d * c.expert_dim) +
                   d * c.vocab_size);
  };
  double b1_gbps = 0;
  for (const Row& r : rows) {
    const double gbps = step_bytes(r.b) * ntg / r.t_tg / 1e9;
    if (r.b == 1) b1_gbps = gbps;
    std::printf("decode B=%lld: %.0f MB of weights per step, %.1f GB/s = %.2f of the probe\n", (long long)r.b,
                step_bytes(r.b) / 1e6, gbps, mem_gbps > 0 ? gbps / mem_gbps : 0.0);
  }
  const double rss = PeakRssMb();
  std::printf("peak RSS %.0f MB (weights %.0f MB at %s)\n", rss,
              c.NumParameters() * (dtype == DType::kBF16 ? 2.0 : 4.0) / 1e6, dtype_name.c_str());
  auto tg = [&](int64_t b) {
    for (const Row& r : rows) {
      if (r.b == b) return b * ntg / r.t_tg;
    }
    return 0.0;
  };
  double prefill = 0;
  for (const Row& r : rows) {
    if (r.b == npl.front()) prefill = r.b * npp / r.t_pp;
  }
  std::printf("decode_b1_tok_s=%.2f decode_b%lld_tok_s=%.2f prefill_tok_s=%.2f rss_mb=%.0f decode_b1_gbps=%.1f "
              "mem_gbps=%.1f\n",
              tg(1), (long long)max_b, tg(max_b), prefill, rss, b1_gbps, mem_gbps);
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return tessera::Main(argc, argv); }
