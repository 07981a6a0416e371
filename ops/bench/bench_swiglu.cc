// bench_swiglu: the CPU backend's SwiGLU element loops (core/backend/cpu/cpu_swiglu_rows.h), each variant
// this CPU runs, against an independent peer in the same run: the same loop over glibc's own vectorized
// expf (libmvec's _ZGVdN8v_expf, AVX2), which is what GCC would call with -ffast-math.
//
// Per variant: nanoseconds per element of forward (out = g * sigmoid(g) * u) and backward (dgate, dup),
// single thread, the best of --reps passes over --n elements (default: 512 tokens x 192, a builtin:tiny
// training step's expert activations), every candidate interleaved over --rounds rounds (the machine is
// shared). Accuracy of each against the portable loop (libm expf) over the same inputs: the largest
// difference in units of the portable result's last place, and the largest relative difference.
//
// Last line: swiglu fwd_ns=<avx2> bwd_ns=<avx2> portable_fwd_ns=<x> peer_fwd_ns=<x> peer_bwd_ns=<x>
//            max_ulp=<x> speedup_vs_portable=<fwd+bwd> ratio=<peer (fwd+bwd) / ours (fwd+bwd)>
//   (ratio > 1: faster than the libmvec loop.)
//
//   bench_swiglu [--n N] [--reps N] [--rounds N]
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/backend/cpu/cpu_features.h"
#include "core/backend/cpu/cpu_swiglu_rows.h"

extern "C" __m256 _ZGVdN8v_expf(__m256 x);  // glibc libmvec, AVX2 variant of expf

namespace {

using tessera::cpu::SmallGemmIsa;

#define PEER_AVX2 __attribute__((target("avx2,fma")))

PEER_AVX2 inline __m256 PeerSigmoid8(__m256 g) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, _ZGVdN8v_expf(_mm256_sub_ps(_mm256_setzero_ps(), g))));
}

// n must be a multiple of 8 (the bench's sizes are).
PEER_AVX2 void PeerForward(const float* g, const float* u, float* out, int64_t n) {
  for (int64_t i = 0; i < n; i += 8) {
    const __m256 gi = _mm256_loadu_ps(g + i);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(gi, PeerSigmoid8(gi)), _mm256_loadu_ps(u + i)));
  }
}

PEER_AVX2 void PeerBackward(const float* g, const float* u, const float* d, float* dg, float* du, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 8) {
    const __m256 gi = _mm256_loadu_ps(g + i), ui = _mm256_loadu_ps(u + i), di = _mm256_loadu_ps(d + i);
    const __m256 sg = PeerSigmoid8(gi), ds = _mm256_mul_ps(di, sg);
    const __m256 inner = _mm256_add_ps(one, _mm256_mul_ps(gi, _mm256_sub_ps(one, sg)));
    _mm256_storeu_ps(dg + i, _mm256_mul_ps(_mm256_mul_ps(ds, ui), inner));
    _mm256_storeu_ps(du + i, _mm256_mul_ps(ds, gi));
  }
}

double Ulps(float got, float want) {
  if (got == want) return 0.0;
  if (!std::isfinite(got) || !std::isfinite(want)) return std::numeric_limits<double>::infinity();
  const float ulp = std::nextafter(std::fabs(want), std::numeric_limits<float>::infinity()) - std::fabs(want);
  return std::fabs(static_cast<double>(got) - want) / ulp;
}

struct Candidate {
  std::string name;
  std::function<void(const float*, const float*, float*, int64_t)> forward;
  std::function<void(const float*, const float*, const float*, float*, float*, int64_t)> backward;
  double fwd_s = 1e30, bwd_s = 1e30;
  double max_ulp = 0.0, max_rel = 0.0;
};

[[noreturn]] void Usage(const char* bad) {
  std::fprintf(stderr, "bench_swiglu: bad argument %s\nusage: bench_swiglu [--n N] [--reps N] [--rounds N]\n", bad);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t n = 512 * 192;
  int reps = 20, rounds = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) Usage(argv[i]);
    const long long v = std::atoll(argv[++i]);
    if (v <= 0) Usage(argv[i]);
    if (a == "--n") n = (v + 7) / 8 * 8;
    else if (a == "--reps") reps = static_cast<int>(v);
    else if (a == "--rounds") rounds = static_cast<int>(v);
    else Usage(a.c_str());
  }
  const auto& f = tessera::cpu::ProbeCpu();
  std::printf("cpu: %s\n", tessera::cpu::FeatureString(f).c_str());
  if (!f.HasAvx2Fma()) {
    std::printf("bench_swiglu: this CPU has no AVX2+FMA: only the portable loop runs here, and the libmvec peer "
                "needs AVX2\nswiglu skipped=no_avx2\n");
    return 0;
  }
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> gate(-8.0f, 8.0f), val(-2.0f, 2.0f);
  std::vector<float> g(n), u(n), d(n);
  for (int64_t i = 0; i < n; ++i) g[i] = gate(rng), u[i] = val(rng), d[i] = val(rng);

  using tessera::cpu::SwiGluBackwardRows;
  using tessera::cpu::SwiGluRows;
  std::vector<Candidate> cands;
  for (SmallGemmIsa isa : {SmallGemmIsa::kPortable, SmallGemmIsa::kAvx2}) {
    cands.push_back({std::string("tessera:") + tessera::cpu::IsaName(isa),
                     [isa](const float* g, const float* u, float* o, int64_t n) { SwiGluRows(isa, g, u, o, n); },
                     [isa](const float* g, const float* u, const float* d, float* dg, float* du, int64_t n) {
                       SwiGluBackwardRows(isa, g, u, d, dg, du, n);
                     }});
  }
  cands.push_back({"peer:libmvec", PeerForward, PeerBackward});

  std::vector<float> ref_o(n), ref_dg(n), ref_du(n), o(n), dg(n), du(n);
  SwiGluRows(SmallGemmIsa::kPortable, g.data(), u.data(), ref_o.data(), n);
  SwiGluBackwardRows(SmallGemmIsa::kPortable, g.data(), u.data(), d.data(), ref_dg.data(), ref_du.data(), n);
  using Clock = std::chrono::steady_clock;
  for (int r = 0; r < rounds; ++r) {
    for (Candidate& c : cands) {
      for (int k = 0; k < reps; ++k) {
        const auto t0 = Clock::now();
        c.forward(g.data(), u.data(), o.data(), n);
        const auto t1 = Clock::now();
        c.backward(g.data(), u.data(), d.data(), dg.data(), du.data(), n);
        const auto t2 = Clock::now();
        c.fwd_s = std::min(c.fwd_s, std::chrono::duration<double>(t1 - t0).count());
        c.bwd_s = std::min(c.bwd_s, std::chrono::duration<double>(t2 - t1).count());
      }
      // Accuracy on the forward output and dup (dgate's factor 1 + g (1 - s) cancels near g = -1.28,
      // where ulps of the result say nothing about the kernel).
      for (int64_t i = 0; i < n; ++i) {
        for (auto [got, want] : {std::pair{o[i], ref_o[i]}, std::pair{du[i], ref_du[i]}}) {
          c.max_ulp = std::max(c.max_ulp, Ulps(got, want));
          if (want != 0.0f) c.max_rel = std::max(c.max_rel, std::fabs(static_cast<double>(got) - want) / std::fabs(want));
        }
      }
    }
  }
  std::printf("SwiGLU over %lld elements (gate in [-8, 8]), 1 thread, best of %d x %d rounds\n",
              static_cast<long long>(n), reps, rounds);
  std::printf("  %-18s %10s %10s %10s %12s\n", "loop", "fwd ns/el", "bwd ns/el", "max ulp", "max rel");
  for (const Candidate& c : cands) {
    std::printf("  %-18s %10.3f %10.3f %10.1f %12.2e\n", c.name.c_str(), c.fwd_s * 1e9 / n, c.bwd_s * 1e9 / n,
                c.max_ulp, c.max_rel);
  }
  const Candidate &portable = cands[0], &ours = cands[1], &peer = cands[2];
  std::printf("swiglu fwd_ns=%.3f bwd_ns=%.3f portable_fwd_ns=%.3f peer_fwd_ns=%.3f peer_bwd_ns=%.3f max_ulp=%.1f "
              "speedup_vs_portable=%.2f ratio=%.3f\n",
              ours.fwd_s * 1e9 / n, ours.bwd_s * 1e9 / n, portable.fwd_s * 1e9 / n, peer.fwd_s * 1e9 / n,
              peer.bwd_s * 1e9 / n, ours.max_ulp, (portable.fwd_s + portable.bwd_s) / (ours.fwd_s + ours.bwd_s),
              (peer.fwd_s + peer.bwd_s) / (ours.fwd_s + ours.bwd_s));
  return 0;
}
