// bench_gemm_kernels: sgemm GFLOP/s of the candidate CPU GEMM libraries on bench_forward's GEMM shapes,
// side by side in one run, to choose the CPU backend's GEMM path from numbers (issue 17).
//
// Candidates (each measured in a forked child, so each library initializes with its own environment;
// the parent loads no BLAS):
//   openblas:auto         Debian's DYNAMIC_ARCH OpenBLAS with OPENBLAS_CORETYPE unset (its model table)
//   openblas:<core>       the same library forced to <core>: the one ChooseKernelSet derives from cpuid
//                         (what the backend loads), SkylakeX, Haswell, and Prescott (the core type the
//                         issue's model-207 Xeon was mistaken for: reproduces the 4x degradation)
//   blis                  BLIS 0.9 (libblis.so.4, Debian's OpenMP build): its own cpuid-based config
//   onednn                oneDNN 2.6 dnnl_sgemm (libdnnl.so.2): JIT kernels for the ISA it detects
// Libraries that are not installed are reported as such and skipped (ops/install-deps.sh installs
// OpenBLAS only; `apt-get install libblis-dev libdnnl-dev` adds the others).
//
// Shapes: one layer of the 'small' config's prefill in bench_forward (4 x 256 tokens = 1024 rows;
// hidden 1024, q 1024, kv 256, 32 experts top-4 of width 512, so 128 rows per expert on average):
// C[m,n] = A[m,k] W[n,k]^T for q, k, v, o, router and 32 x (gate, up, down); plus a square 1024^3.
// Each child: a warm-up pass, then the best of `--reps` passes; the whole candidate list runs `--rounds`
// times interleaved and the best round counts (the build machine is shared: interleaving spreads the
// other load over all candidates). Threads: --threads (default 2) for every library.
//
// Last line: metric=<m> chosen=<kernel> chosen_gflops=<x> best=<kernel> best_gflops=<x> prescott_gflops=<x>
//            speedup_vs_prescott=<x> ratio=<chosen/best>   (m: GFLOP per CPU-second at 1 thread, else wall)
#include <dlfcn.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/backend/cpu/cpu_features.h"

namespace tessera {
namespace {

struct Shape {
  int64_t m, n, k;
};

std::vector<Shape> LayerShapes() {
  std::vector<Shape> s = {{1024, 1024, 1024}, {1024, 256, 1024}, {1024, 256, 1024}, {1024, 1024, 1024},
                          {1024, 32, 1024}};
  for (int e = 0; e < 32; ++e) {
    s.push_back({128, 512, 1024});
    s.push_back({128, 512, 1024});
    s.push_back({128, 1024, 512});
  }
  return s;
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU seconds of this process (all threads). The build machine is shared: while other jobs hold the
// cores, wall time grows but the CPU time a kernel needs does not (much), so at 1 thread GFLOP per
// CPU-second is the steadier comparison. (At 2 threads OpenBLAS's workers spin while waiting, which
// counts as CPU time, so there the wall-clock figure is the meaningful one.)
double CpuNow() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

struct Times {
  double wall = 1e30, cpu = 1e30;
};

// One library's row-major C = A B^T (B given as W[n,k]).
using GemmFn = void (*)(void* fn, const Shape& s, const float* a, const float* w, float* c);

enum CblasOrder { kRowMajor = 101 };
enum CblasTrans { kNoTrans = 111, kTrans = 112 };
using CblasSgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float,
                            float*, int);
void RunCblas(void* fn, const Shape& s, const float* a, const float* w, float* c) {
  reinterpret_cast<CblasSgemm>(fn)(kRowMajor, kNoTrans, kTrans, static_cast<int>(s.m), static_cast<int>(s.n),
                                   static_cast<int>(s.k), 1.0f, a, static_cast<int>(s.k), w,
                                   static_cast<int>(s.k), 0.0f, c, static_cast<int>(s.n));
}

// bli_sgemm (BLIS typed API, general strides; dim_t/inc_t are int64, trans_t 0 = no transpose): B = W^T
// is W read with row stride 1 and column stride k.
using BliSgemm = void (*)(int, int, int64_t, int64_t, int64_t, const float*, const float*, int64_t, int64_t,
                          const float*, int64_t, int64_t, const float*, float*, int64_t, int64_t);
void RunBlis(void* fn, const Shape& s, const float* a, const float* w, float* c) {
  const float one = 1.0f, zero = 0.0f;
  reinterpret_cast<BliSgemm>(fn)(0, 0, s.m, s.n, s.k, &one, a, s.k, 1, w, 1, s.k, &zero, c, s.n, 1);
}

// dnnl_sgemm: row-major, transposes as 'N'/'T'.
using DnnlSgemm = int (*)(char, char, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                          int64_t, float, float*, int64_t);
void RunDnnl(void* fn, const Shape& s, const float* a, const float* w, float* c) {
  reinterpret_cast<DnnlSgemm>(fn)('N', 'T', s.m, s.n, s.k, 1.0f, a, s.k, w, s.k, 0.0f, c, s.n);
}

struct Candidate {
  std::string name;
  std::string library;     // dlopen name
  std::string symbol;      // the gemm
  std::string coretype;    // OPENBLAS_CORETYPE ("" = unset)
  GemmFn run;
};

// Best-of-reps wall and CPU seconds for the shape list.
Times TimeShapes(const Candidate& cand, void* fn, const std::vector<Shape>& shapes, int reps) {
  int64_t ma = 0, mw = 0, mc = 0;
  for (const Shape& s : shapes) {
    ma = std::max(ma, s.m * s.k);
    mw = std::max(mw, s.n * s.k);
    mc = std::max(mc, s.m * s.n);
  }
  std::vector<float> a(ma), w(mw), c(mc);
  for (int64_t i = 0; i < ma; ++i) a[i] = static_cast<float>((i * 7) % 13) * 0.01f;
  for (int64_t i = 0; i < mw; ++i) w[i] = static_cast<float>((i * 5) % 11) * 0.01f;
  for (const Shape& s : shapes) cand.run(fn, s, a.data(), w.data(), c.data());  // warm-up (JIT, pages)
  Times best;
  for (int r = 0; r < reps; ++r) {
    const double t0 = Now(), c0 = CpuNow();
    for (const Shape& s : shapes) cand.run(fn, s, a.data(), w.data(), c.data());
    best.wall = std::min(best.wall, Now() - t0);
    best.cpu = std::min(best.cpu, CpuNow() - c0);
  }
  return best;
}

double Flops(const std::vector<Shape>& shapes) {
  double f = 0;
  for (const Shape& s : shapes) f += 2.0 * s.m * s.n * s.k;
  return f;
}

// In the child: load, run, print one "result" line; exit code 3 when the library is missing.
[[noreturn]] void Child(const Candidate& cand, int threads, int reps) {
  if (!cand.coretype.empty()) setenv("OPENBLAS_CORETYPE", cand.coretype.c_str(), 1);
  else unsetenv("OPENBLAS_CORETYPE");
  const std::string t = std::to_string(threads);
  setenv("OPENBLAS_NUM_THREADS", t.c_str(), 1);
  setenv("OMP_NUM_THREADS", t.c_str(), 1);
  setenv("BLIS_NUM_THREADS", t.c_str(), 1);
  void* h = dlopen(cand.library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) {
    std::printf("result %s missing (%s)\n", cand.name.c_str(), dlerror());
    std::fflush(stdout);
    _exit(3);
  }
  void* fn = dlsym(h, cand.symbol.c_str());
  if (fn == nullptr) {
    std::printf("result %s missing (no %s)\n", cand.name.c_str(), cand.symbol.c_str());
    std::fflush(stdout);
    _exit(3);
  }
  std::string detail;
  if (auto corename = reinterpret_cast<char* (*)()>(dlsym(h, "openblas_get_corename"))) {
    detail = std::string("core=") + corename();
  } else if (auto query = reinterpret_cast<int (*)()>(dlsym(h, "bli_arch_query_id"))) {
    auto name = reinterpret_cast<const char* (*)(int)>(dlsym(h, "bli_arch_string"));
    detail = std::string("arch=") + (name != nullptr ? name(query()) : "?");
  } else if (auto isa = reinterpret_cast<int (*)()>(dlsym(h, "dnnl_get_effective_cpu_isa"))) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "isa=0x%x", isa());
    detail = buf;
  }
  const std::vector<Shape> layer = LayerShapes();
  const std::vector<Shape> square = {{1024, 1024, 1024}};
  const Times tl = TimeShapes(cand, fn, layer, reps);
  const Times ts = TimeShapes(cand, fn, square, reps * 3);
  std::printf("result %s %s layer_gflops=%.1f layer_cpu_gflops=%.1f square_gflops=%.1f\n", cand.name.c_str(),
              detail.c_str(), Flops(layer) / tl.wall / 1e9, Flops(layer) / tl.cpu / 1e9, Flops(square) / ts.wall / 1e9);
  std::fflush(stdout);
  _exit(0);
}

// Runs the candidate in a child; returns its result line ("" when it failed).
std::string RunChild(const Candidate& cand, int threads, int reps) {
  int fds[2];
  if (pipe(fds) != 0) return "";
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], STDOUT_FILENO);
    Child(cand, threads, reps);
  }
  close(fds[1]);
  std::string out;
  char buf[512];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

double Field(const std::string& line, const std::string& key) {
  const size_t p = line.find(key + "=");
  return p == std::string::npos ? 0.0 : std::atof(line.c_str() + p + key.size() + 1);
}

int Main(int argc, char** argv) {
  int threads = 2, reps = 2, rounds = 2;
  for (int i = 1; i < argc; ++i) {
    const bool has = i + 1 < argc;
    if (!std::strcmp(argv[i], "--threads") && has) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--reps") && has) reps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--rounds") && has) rounds = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: bench_gemm_kernels [--threads N] [--reps N] [--rounds N]\n");
      return 2;
    }
  }
  const cpu::CpuFeatures& f = cpu::ProbeCpu();
  const cpu::KernelSet ks = cpu::ChooseKernelSet(f);
  std::printf("cpu: %s\n", cpu::FeatureString(f).c_str());
  std::printf("chosen by the features: openblas:%s small_gemm=%s bf16_gemm=%s; %d threads\n",
              ks.blas_core.c_str(), cpu::IsaName(ks.small_gemm), cpu::IsaName(ks.bf16_gemm), threads);
  const std::string chosen = "openblas:" + ks.blas_core;
  std::vector<Candidate> cands = {{"openblas:auto", "libopenblas.so.0", "cblas_sgemm", "", RunCblas}};
  for (const char* core : {ks.blas_core.c_str(), "SkylakeX", "Haswell", "Prescott"}) {
    const std::string name = std::string("openblas:") + core;
    bool dup = false;
    for (const Candidate& c : cands) dup |= c.name == name;
    if (!dup) cands.push_back({name, "libopenblas.so.0", "cblas_sgemm", core, RunCblas});
  }
  cands.push_back({"blis", "libblis.so.4", "bli_sgemm", "", RunBlis});
  cands.push_back({"onednn", "libdnnl.so.2", "dnnl_sgemm", "", RunDnnl});

  std::map<std::string, std::string> best_line;
  std::map<std::string, double> best_layer, best_square, best_cpu;
  for (int r = 0; r < rounds; ++r) {
    for (const Candidate& c : cands) {
      const std::string line = RunChild(c, threads, reps);
      std::printf("  round %d: %s\n", r + 1, line.empty() ? (c.name + " failed").c_str() : line.c_str());
      std::fflush(stdout);
      const double g = Field(line, "layer_gflops");
      if (g > best_layer[c.name]) {
        best_layer[c.name] = g;
        best_line[c.name] = line;
      }
      best_square[c.name] = std::max(best_square[c.name], Field(line, "square_gflops"));
      best_cpu[c.name] = std::max(best_cpu[c.name], Field(line, "layer_cpu_gflops"));
    }
  }
  std::printf("%-22s %14s %20s %16s\n", "kernel", "layer GFLOP/s", "layer GFLOP/cpu-s", "1024^3 GFLOP/s");
  // The figure the choice is made on: GFLOP per CPU-second at 1 thread (steadier on a shared machine),
  // wall-clock GFLOP/s otherwise.
  std::map<std::string, double>& metric = threads == 1 ? best_cpu : best_layer;
  std::string best = chosen;
  for (const Candidate& c : cands) {
    if (best_layer[c.name] <= 0) {
      std::printf("%-22s %14s %20s %16s\n", c.name.c_str(), "n/a", "n/a", "n/a");
      continue;
    }
    std::printf("%-22s %14.1f %20.1f %16.1f%s\n", c.name.c_str(), best_layer[c.name], best_cpu[c.name],
                best_square[c.name], c.name == chosen ? "   <- chosen" : "");
    if (metric[c.name] > metric[best]) best = c.name;
  }
  const double cg = metric[chosen], pg = metric["openblas:Prescott"];
  std::printf("metric=%s chosen=%s chosen_gflops=%.1f best=%s best_gflops=%.1f prescott_gflops=%.1f "
              "speedup_vs_prescott=%.2f ratio=%.3f\n",
              threads == 1 ? "layer_gflop_per_cpu_s" : "layer_gflops", chosen.c_str(), cg, best.c_str(),
              metric[best], pg, pg > 0 ? cg / pg : 0.0, metric[best] > 0 ? cg / metric[best] : 0.0);
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return tessera::Main(argc, argv); }
