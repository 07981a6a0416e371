// bench_forward: prefill and decode throughput of the MoE forward on the CPU backend, for
// builtin:tiny and the 'small' config (random weights), next to OpenBLAS sgemm on the same GEMM shapes.
//
// FLOPs counted (2 per multiply-add): q/k/v/o projections, router, the experts actually executed
// (top-k per token: gate, up, down), attention scores and weighted values (causal: only the keys each
// query sees), and the LM head rows computed (prefill: each sequence's last token). The sgemm
// reference runs cblas_sgemm once per distinct GEMM of the same forward (projections and router over
// all tokens, each expert's group at its routed row count, LM head) and reports their FLOPs over their
// time; attention is not a GEMM in the backend and is excluded from the reference.
//
// bf16 (issue 17): the small config runs a second time with bf16 weight matrices and KV caches (as
// `tessera-server --dtype bf16`), and decode tok/s of both dtypes come from the same run: bf16 decode reads
// half the weight bytes through the bf16 small-M kernels (cpu_bf16_gemm.h).
//
// Limits and peer (issue 17), all measured in the same run:
//   - peak GFLOP/s: the backend's BLAS (chosen from the CPU features, cpu_blas.h) on a 1024^3 sgemm;
//   - memory bandwidth: ops/bench/memory_probe.h (a 512 MiB read sweep with every thread, scalar and
//     AVX-512, at the start and again at the end; the larger counts);
//   - decode bytes/s: the weight bytes one decode step reads (attention, router, LM head, and the
//     expected number of distinct experts the batch routes to under uniform routing) per step time;
//   - peer: PyTorch's own GEMM (its bundled MKL/oneDNN kernels, not our BLAS) on the same GEMM shapes
//     (ops/bench/torch_peer.py --cpu-gemm), same thread count, when a Python with torch is found
//     (--python, $TESSERA_TORCH_PYTHON, /work/venv/bin/python); prefill GFLOP/s over the peer's is the
//     ratio, since comparing with the BLAS we use hides a crippled BLAS (issue 17).
//
// Usage: bench_forward [--quick] [--python P] [--no-peer] [--no-bf16] [--profile]
//   (--quick: smaller batches; --profile: per-op time table of the small config's f32 and bf16 decode)
// Last line (small config): prefill_tok_s=<x> decode_tok_s=<x> bf16_decode_tok_s=<x> bf16_speedup=<x>
//   gflops=<x> sgemm_gflops=<x> peak_gflops=<x> mem_gbps=<x> decode_gbps=<x> torch_gflops=<x>
//   ratio=<gflops / torch_gflops, or / sgemm_gflops without the peer>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/backend/cpu/cpu_blas.h"

#include "core/backend/backend.h"
#include "core/backend/profiling_backend.h"
#include "core/model/config.h"
#include "core/model/kv_cache.h"
#include "core/model/model.h"
#include "core/util/parallel.h"
#include "ops/bench/bench_clock.h"
#include "ops/bench/memory_probe.h"

namespace tessera {
namespace {

using bench::Now;
using bench::PeakRssMb;

struct Shape {
  int64_t m, n, k;
};

// Time cblas_sgemm over `shapes` (C[m,n] = A[m,k] B[n,k]^T, as nn.Linear), best of `reps`.
double SgemmSeconds(const std::vector<Shape>& shapes, int reps) {
  int64_t max_a = 0, max_b = 0, max_c = 0;
  for (const Shape& s : shapes) {
    max_a = std::max(max_a, s.m * s.k);
    max_b = std::max(max_b, s.n * s.k);
    max_c = std::max(max_c, s.m * s.n);
  }
  std::vector<float> a(max_a, 0.01f), b(max_b, 0.02f), c(max_c);
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const double t0 = Now();
    for (const Shape& s : shapes) {
      cpu::Sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s.m, s.n, s.k, 1.0f, a.data(), s.k, b.data(), s.k,
                  0.0f, c.data(), s.n);
    }
    best = std::min(best, Now() - t0);
  }
  return best;
}

struct Result {
  double prefill_tok_s = 0, decode_tok_s = 0, gflops = 0, sgemm_gflops = 0, decode_gflops = 0, decode_gbps = 0;
  std::vector<Shape> gemm_shapes;  // the prefill's GEMMs (for the peer)
};

// A model after its prefill, ready to decode: every sequence one token per step, batched.
struct DecodeState {
  const char* label = "";
  ModelConfig c;
  int64_t batch = 0, prompt_len = 0;
  DType dtype = DType::kF32;
  Backend* be = nullptr;
  std::unique_ptr<Model> model;
  std::vector<std::unique_ptr<KvCache>> caches;
  std::vector<int32_t> next;
  int64_t steps = 0;     // decode steps run
  double seconds = 0.0;  // their time

  void Steps(int64_t count) {
    ForwardOptions opt;
    opt.logits = LogitsMode::kLast;
    const double t0 = Now();
    for (int64_t s = 0; s < count; ++s) {
      std::vector<SequenceInput> step;
      for (int64_t b = 0; b < batch; ++b) step.push_back({absl::MakeConstSpan(&next[b], 1), nullptr, caches[b].get()});
      auto r = model->Forward(step, opt);
      if (!r.ok()) {
        std::printf("decode failed: %s\n", std::string(r.status().message()).c_str());
        std::exit(1);
      }
      std::vector<float> logits = be->ToHostF32(r->logits).value();
      for (int64_t b = 0; b < batch; ++b) {
        const float* row = logits.data() + b * c.vocab_size;
        next[b] = static_cast<int32_t>(std::max_element(row, row + std::min<int64_t>(c.vocab_size, 256)) - row);
      }
    }
    seconds += Now() - t0;
    steps += count;
  }
};

// Prints the decode results of `st` into `res`.
void FinishDecode(DecodeState& st, Result& res) {
  const ModelConfig& c = st.c;
  const bool bf16 = st.dtype == DType::kBF16;
  const double d = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), f = c.expert_dim;
  const double decode_s = st.seconds;
  const double decode_tok = static_cast<double>(st.batch * st.steps);
  const double ctx = st.prompt_len + st.steps / 2.0;
  const double per_tok = c.num_layers * (2.0 * d * (qd + 2 * kvd) + 2.0 * qd * d + 2.0 * d * c.num_experts +
                                         2.0 * c.top_k * 3 * d * f + 4.0 * ctx * c.num_heads * c.head_dim) +
                         2.0 * d * c.vocab_size;
  // Weight bytes one decode step reads: attention, router and LM head once, and the distinct experts the
  // batch's tokens route to (expected count under uniform routing: E (1 - (1 - k/E)^B)).
  const double elem = bf16 ? 2.0 : 4.0;
  const double experts_touched =
      c.num_experts * (1.0 - std::pow(1.0 - static_cast<double>(c.top_k) / c.num_experts, static_cast<double>(st.batch)));
  const double step_bytes = elem * (c.num_layers * (d * (qd + 2 * kvd) + qd * d + d * c.num_experts +
                                                    experts_touched * 3 * d * f) +
                                    d * c.vocab_size);
  res.decode_gbps = step_bytes * st.steps / decode_s / 1e9;
  res.decode_tok_s = decode_tok / decode_s;
  res.decode_gflops = per_tok * decode_tok / decode_s / 1e9;
  std::printf("  %s decode: %lld seqs x %lld steps in %.3fs = %.1f tok/s (%.1f GFLOP/s; weights re-read each "
              "step: memory-bound, %.1f MB/step = %.1f GB/s)\n",
              st.label, (long long)st.batch, (long long)st.steps, decode_s, res.decode_tok_s, res.decode_gflops,
              step_bytes / 1e6, res.decode_gbps);
  int64_t kv_bytes = 0;
  for (const auto& cache : st.caches) kv_bytes += cache->bytes();
  std::printf("  %s weights %.0f MB + KV caches %.1f MB; peak RSS %.0f MB\n", st.label,
              c.NumParameters() * elem / 1e6, kv_bytes / 1e6, PeakRssMb());
}

// Prefill (timed, with its sgemm reference), then `decode_steps` decode steps; with `keep`, the decode is
// left to the caller (the model and caches move into *keep).
Result Run(const char* label, const ModelConfig& c, int64_t batch, int64_t prompt_len, int64_t decode_steps,
           Backend* be, DType dtype = DType::kF32, DecodeState* keep = nullptr) {
  const bool bf16 = dtype == DType::kBF16;
  std::printf("== %s: hidden %lld, layers %lld, heads %lld/%lld x %lld, experts %lld top-%lld width %lld, vocab %lld, "
              "%.1fM params\n",
              label, (long long)c.hidden_size, (long long)c.num_layers, (long long)c.num_heads,
              (long long)c.num_kv_heads, (long long)c.head_dim, (long long)c.num_experts, (long long)c.top_k,
              (long long)c.expert_dim, (long long)c.vocab_size, c.NumParameters() / 1e6);
  double t0 = Now();
  auto weights = ModelWeights::RandomInit(c, 1, be);
  if (weights.ok() && bf16) weights = weights->WithMatrixDtype(c, DType::kBF16, be);
  if (!weights.ok()) {
    std::printf("init failed: %s\n", std::string(weights.status().message()).c_str());
    std::exit(1);
  }
  auto model = Model::Create(c, *std::move(weights), be).value();
  std::printf("  init %.2fs, RSS %.0f MB\n", Now() - t0, PeakRssMb());

  std::mt19937 rng(7);
  std::vector<std::vector<int32_t>> prompts(batch);
  for (auto& p : prompts) {
    p.resize(prompt_len);
    for (auto& t : p) t = static_cast<int32_t>(rng() % std::min<int64_t>(c.vocab_size, 256));
  }
  std::vector<std::unique_ptr<KvCache>> caches;
  for (int64_t b = 0; b < batch; ++b) {
    caches.push_back(KvCache::Create(c, prompt_len + decode_steps + 1, be, bf16 ? DType::kBF16 : DType::kF32).value());
  }

  // Warm-up prefill (standalone, small) so first-touch page faults are not timed.
  {
    std::vector<int32_t> w(prompts[0].begin(), prompts[0].begin() + std::min<int64_t>(prompt_len, 16));
    SequenceInput in[1] = {{w, nullptr, nullptr}};
    (void)model->Forward(in);
  }
  // ---- Prefill ------------------------------------------------------------------------------------
  std::vector<SequenceInput> in;
  for (int64_t b = 0; b < batch; ++b) in.push_back({prompts[b], nullptr, caches[b].get()});
  ForwardOptions opt;
  opt.logits = LogitsMode::kLast;
  opt.collect_routing = true;  // to count the expert GEMMs actually executed
  t0 = Now();
  auto pre = model->Forward(in, opt);
  const double prefill_s = Now() - t0;
  if (!pre.ok()) {
    std::printf("prefill failed: %s\n", std::string(pre.status().message()).c_str());
    std::exit(1);
  }
  const int64_t n = batch * prompt_len;
  const double d = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), f = c.expert_dim;
  const double proj_flops = 2.0 * n * d * (qd + 2 * kvd) + 2.0 * n * qd * d;
  const double router_flops = 2.0 * n * d * c.num_experts;
  const double expert_flops = 2.0 * n * c.top_k * 3 * d * f;
  const double causal_pairs = batch * (prompt_len * (prompt_len + 1) / 2.0);
  const double attn_flops = 2.0 * 2.0 * causal_pairs * c.num_heads * c.head_dim;
  const double lm_flops = 2.0 * batch * d * c.vocab_size;
  const double total = c.num_layers * (proj_flops + router_flops + expert_flops + attn_flops) + lm_flops;
  const double gflops = total / prefill_s / 1e9;

  // The same GEMMs through cblas_sgemm: per layer the projections, router, and each expert group at
  // its routed row count (from this forward's routing statistics), plus the LM head.
  std::vector<Shape> shapes;
  double gemm_flops = 0;
  auto add = [&](int64_t m, int64_t nn, int64_t k) {
    if (m <= 0) return;
    shapes.push_back({m, nn, k});
    gemm_flops += 2.0 * m * nn * k;
  };
  for (int64_t l = 0; l < c.num_layers; ++l) {
    add(n, c.q_dim(), c.hidden_size);
    add(n, c.kv_dim(), c.hidden_size);
    add(n, c.kv_dim(), c.hidden_size);
    add(n, c.hidden_size, c.q_dim());
    add(n, c.num_experts, c.hidden_size);
    for (int64_t e = 0; e < c.num_experts; ++e) {
      int64_t rows = 0;
      for (const RoutingStats& rs : pre->routing) rows += rs.tokens_routed[l * c.num_experts + e];
      add(rows, c.expert_dim, c.hidden_size);
      add(rows, c.expert_dim, c.hidden_size);
      add(rows, c.hidden_size, c.expert_dim);
    }
  }
  add(batch, c.vocab_size, c.hidden_size);
  // (bf16: the f32 BLAS reference is the f32 run's; skipped here.)
  const double sgemm_s = bf16 ? 0.0 : SgemmSeconds(shapes, 2);
  const double sgemm_gflops = bf16 ? 0.0 : gemm_flops / sgemm_s / 1e9;
  int64_t groups = 0;
  for (int64_t g : pre->groups_per_layer) groups += g;
  std::printf("  prefill: %lld seqs x %lld tokens in %.3fs = %.0f tok/s, %.1f GFLOP/s (%.1f GFLOP; "
              "experts %.0f%%, attention %.0f%%); %lld expert groups\n",
              (long long)batch, (long long)prompt_len, prefill_s, n / prefill_s, gflops, total / 1e9,
              100.0 * c.num_layers * expert_flops / total, 100.0 * c.num_layers * attn_flops / total,
              (long long)groups);
  if (!bf16) {
    std::printf("  sgemm on the same GEMM shapes: %.3fs for %.1f GFLOP = %.1f GFLOP/s; forward/sgemm = %.2f\n",
                sgemm_s, gemm_flops / 1e9, sgemm_gflops, gflops / sgemm_gflops);
  }

  Result res;
  res.gemm_shapes = shapes;
  res.prefill_tok_s = n / prefill_s;
  res.gflops = gflops;
  res.sgemm_gflops = sgemm_gflops;
  DecodeState local;
  DecodeState& st = keep != nullptr ? *keep : local;
  st.label = label;
  st.c = c;
  st.batch = batch;
  st.prompt_len = prompt_len;
  st.dtype = dtype;
  st.be = be;
  st.model = std::move(model);
  st.caches = std::move(caches);
  st.next.resize(batch);
  for (int64_t b = 0; b < batch; ++b) st.next[b] = prompts[b].back();
  if (keep == nullptr) {
    st.Steps(decode_steps);
    FinishDecode(st, res);
  }
  return res;
}

// Python with torch for the peer: --python, $TESSERA_TORCH_PYTHON, /work/venv/bin/python ("" if none).
std::string FindTorchPython(std::string python) {
  if (python.empty()) {
    if (const char* env = std::getenv("TESSERA_TORCH_PYTHON")) python = env;
  }
  if (python.empty()) python = "/work/venv/bin/python";
  const std::string probe = python + " -c 'import torch' >/dev/null 2>&1";
  return std::system(probe.c_str()) == 0 ? python : "";
}

// torch's GEMM GFLOP/s on `shapes` (torch_peer.py --cpu-gemm), 0 when it does not run.
double TorchGemmGflops(const std::string& python, const std::vector<Shape>& shapes, int threads) {
  std::string list;
  for (const Shape& sh : shapes) {
    list += std::to_string(sh.m) + "," + std::to_string(sh.n) + "," + std::to_string(sh.k) + ";";
  }
  const std::string cmd = python + " " + TESSERA_SOURCE_DIR + "/ops/bench/torch_peer.py --reps 3 --threads " +
                          std::to_string(threads) + " --cpu-gemm '" + list + "' 2>/dev/null";
  FILE* f = popen(cmd.c_str(), "r");
  if (f == nullptr) return 0.0;
  char line[1024];
  double gflops = 0.0;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (const char* p = std::strstr(line, "peer cpu_gemm ")) {
      std::printf("  %s", p);
      if (const char* g = std::strstr(p, " gflops=")) gflops = std::atof(g + 8);
    }
  }
  pclose(f);
  return gflops;
}

// The backend BLAS's best case: a 1024^3 sgemm, best of 5 (GFLOP/s).
double PeakSgemmGflops() {
  const int64_t n = 1024;
  std::vector<float> a(n * n, 0.01f), b(n * n, 0.02f), c(n * n);
  double best = 1e30;
  for (int r = 0; r < 6; ++r) {  // the first is a warm-up
    const double t0 = Now();
    cpu::Sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    if (r > 0) best = std::min(best, Now() - t0);
  }
  return 2.0 * n * n * n / best / 1e9;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  using namespace tessera;
  bool quick = false, peer = true, run_bf16 = true, profile = false;
  std::string python;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--no-peer")) peer = false;
    else if (!std::strcmp(argv[i], "--no-bf16")) run_bf16 = false;
    else if (!std::strcmp(argv[i], "--profile")) profile = true;
    else if (!std::strcmp(argv[i], "--python") && i + 1 < argc) python = argv[++i];
    else {
      std::fprintf(stderr, "usage: bench_forward [--quick] [--python P] [--no-peer] [--no-bf16] [--profile]\n");
      return 2;
    }
  }
  std::unique_ptr<Backend> be = MakeCpuBackend();
  std::printf("bench_forward: backend %s, %d threads, OpenBLAS %s\n", be->name().c_str(), NumThreads(),
              cpu::Blas().config.c_str());
  std::printf("cpu: %s\nkernels: %s\n", cpu::CpuFeaturesString().c_str(), cpu::CpuKernelSetString().c_str());
  const double peak_gflops = PeakSgemmGflops();
  double mem_gbps = bench::MemoryReadGbps();
  std::printf("machine limits (this run): sgemm 1024^3 %.1f GFLOP/s (the BLAS above), memory read %.1f GB/s\n",
              peak_gflops, mem_gbps);
  Run("builtin:tiny", ModelConfig::BuiltinTiny(), quick ? 2 : 8, quick ? 64 : 256, quick ? 8 : 32, be.get());
  const int64_t batch = quick ? 1 : 4, prompt = quick ? 64 : 256, steps = quick ? 4 : 16;
  // Small config: f32 and bf16 prefills, then their decodes interleaved in rounds (f32 steps, bf16 steps,
  // ...), so that other load on a shared machine falls on both alike.
  // --profile: each model runs over its own ProfilingBackend, enabled only while it decodes.
  DecodeState d32, d16;
  ProfilingBackend p32(be.get()), p16(be.get());
  Result small = Run("small", ModelConfig::BuiltinSmall(), batch, prompt, steps, &p32, DType::kF32, &d32);
  Result small16;
  if (run_bf16) {
    small16 = Run("small bf16", ModelConfig::BuiltinSmall(), batch, prompt, steps, &p16, DType::kBF16, &d16);
  }
  const int64_t rounds = 4;
  d32.Steps(1);  // warm-up step each (first-touch of decode-only buffers), untimed below
  d32.seconds = 0;
  d32.steps = 0;
  if (run_bf16) {
    d16.Steps(1);
    d16.seconds = 0;
    d16.steps = 0;
  }
  p32.set_enabled(profile);
  p16.set_enabled(profile);
  for (int64_t r = 0; r < rounds; ++r) {
    d32.Steps(steps / rounds);
    if (run_bf16) d16.Steps(steps / rounds);
  }
  p32.set_enabled(false);
  p16.set_enabled(false);
  if (profile) {
    std::printf("small f32 decode ops:\n%s", p32.Report(d32.seconds).c_str());
    if (run_bf16) std::printf("small bf16 decode ops:\n%s", p16.Report(d16.seconds).c_str());
  }
  std::printf("== small decode, f32 and bf16 interleaved in %lld rounds of %lld steps\n", (long long)rounds,
              (long long)(steps / rounds));
  FinishDecode(d32, small);
  if (run_bf16) FinishDecode(d16, small16);
  double torch_gflops = 0.0;
  if (peer) {
    python = FindTorchPython(python);
    if (python.empty()) std::printf("peer: no Python with torch (--python, $TESSERA_TORCH_PYTHON); ratio vs sgemm\n");
    else torch_gflops = TorchGemmGflops(python, small.gemm_shapes, NumThreads());
  }
  // The bandwidth probe again: on a shared machine the first one may have met other load.
  const double mem_gbps_end = bench::MemoryReadGbps();
  std::printf("memory read probe at the end: %.1f GB/s (start %.1f); the larger counts\n", mem_gbps_end, mem_gbps);
  mem_gbps = std::max(mem_gbps, mem_gbps_end);
  std::printf("small: prefill %.1f GFLOP/s = %.2f of peak sgemm, %.2f of torch's GEMM on the same shapes; decode f32 "
              "%.1f GB/s = %.2f of memory bandwidth, bf16 %.1f GB/s = %.2f; bf16/f32 decode tok/s %.2fx\n",
              small.gflops, small.gflops / peak_gflops, torch_gflops > 0 ? small.gflops / torch_gflops : 0.0,
              small.decode_gbps, small.decode_gbps / mem_gbps, small16.decode_gbps, small16.decode_gbps / mem_gbps,
              run_bf16 ? small16.decode_tok_s / small.decode_tok_s : 0.0);
  const double ratio = torch_gflops > 0 ? small.gflops / torch_gflops : small.gflops / small.sgemm_gflops;
  std::printf("prefill_tok_s=%.1f decode_tok_s=%.1f bf16_decode_tok_s=%.1f bf16_speedup=%.2f gflops=%.1f "
              "sgemm_gflops=%.1f peak_gflops=%.1f mem_gbps=%.1f decode_gbps=%.1f torch_gflops=%.1f ratio=%.3f\n",
              small.prefill_tok_s, small.decode_tok_s, small16.decode_tok_s,
              run_bf16 ? small16.decode_tok_s / small.decode_tok_s : 0.0, small.gflops, small.sgemm_gflops,
              peak_gflops, mem_gbps, small.decode_gbps, torch_gflops, ratio);
  return 0;
}
