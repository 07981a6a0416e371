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
// Usage: bench_forward [--quick]   (--quick: smaller batches, for smoke runs)
// Last line (small config): prefill_tok_s=<x> decode_tok_s=<x> gflops=<x> sgemm_gflops=<x> ratio=<x>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <cblas.h>

#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/kv_cache.h"
#include "core/model/model.h"
#include "core/util/parallel.h"

namespace tessera {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double PeakRssMb() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

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
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s.m, s.n, s.k, 1.0f, a.data(), s.k, b.data(), s.k,
                  0.0f, c.data(), s.n);
    }
    best = std::min(best, Now() - t0);
  }
  return best;
}

struct Result {
  double prefill_tok_s = 0, decode_tok_s = 0, gflops = 0, sgemm_gflops = 0, decode_gflops = 0;
};

Result Run(const char* label, const ModelConfig& c, int64_t batch, int64_t prompt_len, int64_t decode_steps,
           Backend* be) {
  std::printf("== %s: hidden %lld, layers %lld, heads %lld/%lld x %lld, experts %lld top-%lld width %lld, vocab %lld, "
              "%.1fM params\n",
              label, (long long)c.hidden_size, (long long)c.num_layers, (long long)c.num_heads,
              (long long)c.num_kv_heads, (long long)c.head_dim, (long long)c.num_experts, (long long)c.top_k,
              (long long)c.expert_dim, (long long)c.vocab_size, c.NumParameters() / 1e6);
  double t0 = Now();
  auto weights = ModelWeights::RandomInit(c, 1, be);
  if (!weights.ok()) {
    std::printf("init failed: %s\n", std::string(weights.status().message()).c_str());
    std::exit(1);
  }
  auto model = Model::Create(c, *weights, be).value();
  std::printf("  init %.2fs, RSS %.0f MB\n", Now() - t0, PeakRssMb());

  std::mt19937 rng(7);
  std::vector<std::vector<int32_t>> prompts(batch);
  for (auto& p : prompts) {
    p.resize(prompt_len);
    for (auto& t : p) t = static_cast<int32_t>(rng() % std::min<int64_t>(c.vocab_size, 256));
  }
  std::vector<std::unique_ptr<KvCache>> caches;
  for (int64_t b = 0; b < batch; ++b) caches.push_back(KvCache::Create(c, prompt_len + decode_steps, be).value());

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
  const double sgemm_s = SgemmSeconds(shapes, 2);
  const double sgemm_gflops = gemm_flops / sgemm_s / 1e9;
  int64_t groups = 0;
  for (int64_t g : pre->groups_per_layer) groups += g;
  std::printf("  prefill: %lld seqs x %lld tokens in %.3fs = %.0f tok/s, %.1f GFLOP/s (%.1f GFLOP; "
              "experts %.0f%%, attention %.0f%%); %lld expert groups\n",
              (long long)batch, (long long)prompt_len, prefill_s, n / prefill_s, gflops, total / 1e9,
              100.0 * c.num_layers * expert_flops / total, 100.0 * c.num_layers * attn_flops / total,
              (long long)groups);
  std::printf("  sgemm on the same GEMM shapes: %.3fs for %.1f GFLOP = %.1f GFLOP/s; forward/sgemm = %.2f\n",
              sgemm_s, gemm_flops / 1e9, sgemm_gflops, gflops / sgemm_gflops);

  // ---- Decode: every sequence one token per step, batched --------------------------------------------
  std::vector<int32_t> next(batch);
  for (int64_t b = 0; b < batch; ++b) next[b] = prompts[b].back();
  opt.collect_routing = false;
  t0 = Now();
  for (int64_t s = 0; s < decode_steps; ++s) {
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
  const double decode_s = Now() - t0;
  const double decode_tok = static_cast<double>(batch * decode_steps);
  const double ctx = prompt_len + decode_steps / 2.0;
  const double per_tok = c.num_layers * (2.0 * d * (qd + 2 * kvd) + 2.0 * qd * d + 2.0 * d * c.num_experts +
                                         2.0 * c.top_k * 3 * d * f + 4.0 * ctx * c.num_heads * c.head_dim) +
                         2.0 * d * c.vocab_size;
  Result res;
  res.prefill_tok_s = n / prefill_s;
  res.decode_tok_s = decode_tok / decode_s;
  res.gflops = gflops;
  res.sgemm_gflops = sgemm_gflops;
  res.decode_gflops = per_tok * decode_tok / decode_s / 1e9;
  std::printf("  decode: %lld seqs x %lld steps in %.3fs = %.1f tok/s (%.1f GFLOP/s; weights re-read each "
              "step: memory-bound)\n",
              (long long)batch, (long long)decode_steps, decode_s, res.decode_tok_s, res.decode_gflops);
  int64_t kv_bytes = 0;
  for (const auto& cache : caches) kv_bytes += cache->bytes();
  std::printf("  weights %.0f MB + KV caches %.1f MB; peak RSS %.0f MB\n", c.NumParameters() * 4 / 1e6,
              kv_bytes / 1e6, PeakRssMb());
  return res;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  using namespace tessera;
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  std::unique_ptr<Backend> be = MakeCpuBackend();
  std::printf("bench_forward: backend %s, %d threads, OpenBLAS %s\n", be->name().c_str(), NumThreads(),
              openblas_get_config());
  Run("builtin:tiny", ModelConfig::BuiltinTiny(), quick ? 2 : 8, quick ? 64 : 256, quick ? 8 : 32, be.get());
  Result small = Run("small", ModelConfig::BuiltinSmall(), quick ? 1 : 4, quick ? 64 : 256, quick ? 4 : 16, be.get());
  std::printf("prefill_tok_s=%.1f decode_tok_s=%.1f gflops=%.1f sgemm_gflops=%.1f ratio=%.3f\n", small.prefill_tok_s,
              small.decode_tok_s, small.gflops, small.sgemm_gflops, small.gflops / small.sgemm_gflops);
  return 0;
}
