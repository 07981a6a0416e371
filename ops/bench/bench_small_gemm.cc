// bench_small_gemm: few-row GEMMs as decode and multi-tenant MoE serving issue them, on the CPU
// backend (direct small-M kernels, core/backend/cpu/cpu_small_gemm.h) next to OpenBLAS sgemm called
// the way the backend called it before (one cblas_sgemm per Matmul; grouped calls: groups with
// m*n*k <= 262144 concurrently in ParallelFor, larger ones serially).
//
// Shapes: builtin:tiny (hidden 192, expert width 96, 16 experts, vocab 264) and the small config
// (hidden 1024, expert width 512, vocab 32000); Matmul y = x W^T (trans_b) and dx = dy W (no trans)
// at rows 1, 2, 4, 8, 16; grouped forward / input-grad with 8..128 groups of 1-3 rows (row counts
// cycle 1, 2, 3; each group its own weight, up to 32 distinct, as tenants' overlays are).
//
// Timing: for each case, the two variants alternate in rounds (so load on a shared machine hits
// both alike); per round the median of `iters` calls; reported: the best round's microseconds per
// call for each, and sgemm/direct (> 1: the direct path is faster).
//
// Usage: bench_small_gemm [--filter SUBSTR[$]] [--rounds N] [--iters N] [--only sgemm|direct]
//   --filter: run the cases whose name contains SUBSTR (ending in '$': whose name ends with it).
//   --only runs one variant once per iteration without timing rounds (for valgrind --tool=callgrind).
#include "core/backend/cpu/cpu_blas.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "core/backend/cpu/cpu_small_gemm.h"
#include "core/util/parallel.h"

namespace tessera {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Tensor RandomTensor(Backend& be, std::vector<int64_t> shape, uint32_t seed) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> v(n);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (float& f : v) f = u(rng);
  return *be.FromHost(v, shape);
}

struct Case {
  std::string name;
  std::function<void()> sgemm, direct;
  std::function<void()> kernel;  // optional: the direct kernel alone, without the backend's checks
};

struct Options {
  std::string filter;
  int rounds = 7;
  int iters = 30;
  std::string only;
};

bool Matches(const std::string& name, const std::string& filter) {
  if (filter.empty()) return true;
  if (filter.back() == '$') {
    const std::string tail = filter.substr(0, filter.size() - 1);
    return name.size() >= tail.size() && name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
  }
  return name.find(filter) != std::string::npos;
}

double MedianUs(const std::function<void()>& fn, int iters) {
  std::vector<double> t(iters);
  for (int i = 0; i < iters; ++i) {
    const double t0 = Now();
    fn();
    t[i] = (Now() - t0) * 1e6;
  }
  std::nth_element(t.begin(), t.begin() + iters / 2, t.end());
  return t[iters / 2];
}

void RunCase(const Case& c, const Options& o) {
  if (!o.only.empty()) {
    const auto& fn = o.only == "sgemm" ? c.sgemm : c.direct;
    for (int i = 0; i < o.iters; ++i) fn();
    std::printf("%-44s ran %s x%d\n", c.name.c_str(), o.only.c_str(), o.iters);
    return;
  }
  c.sgemm();  // warm caches, thread pools
  c.direct();
  double best_s = 1e30, best_d = 1e30;
  for (int r = 0; r < o.rounds; ++r) {
    best_s = std::min(best_s, MedianUs(c.sgemm, o.iters));
    best_d = std::min(best_d, MedianUs(c.direct, o.iters));
  }
  double best_k = 0;
  if (c.kernel) {
    best_k = 1e30;
    for (int r = 0; r < o.rounds; ++r) best_k = std::min(best_k, MedianUs(c.kernel, o.iters));
  }
  std::printf("%-40s sgemm %9.2f us  direct %9.2f us  sgemm/direct %5.2f  (kernel alone %8.2f us)\n",
              c.name.c_str(), best_s, best_d, best_s / best_d, best_k);
  std::fflush(stdout);
}

// Old grouped behaviour: concurrent small sgemms, serial large ones.
void SgemmGroups(const std::vector<GemmGroup>& groups, double nk,
                 const std::function<void(const GemmGroup&)>& gemm) {
  std::vector<const GemmGroup*> small, large;
  for (const GemmGroup& g : groups) (g.rows * nk <= 65536.0 * 4 ? small : large).push_back(&g);
  if (small.size() == 1) large.push_back(small[0]);
  else if (!small.empty()) {
    ParallelFor(static_cast<int64_t>(small.size()), 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) gemm(*small[i]);
    });
  }
  for (const GemmGroup* g : large) gemm(*g);
}

struct Model {
  const char* name;
  int64_t hidden, kv, expert, experts, vocab;
};

int Main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    auto next = [&](const char* flag) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", flag);
        std::exit(2);
      }
      return argv[++i];
    };
    if (!std::strcmp(argv[i], "--filter")) o.filter = next("--filter");
    else if (!std::strcmp(argv[i], "--rounds")) o.rounds = std::atoi(next("--rounds"));
    else if (!std::strcmp(argv[i], "--iters")) o.iters = std::atoi(next("--iters"));
    else if (!std::strcmp(argv[i], "--only")) o.only = next("--only");
    else {
      std::fprintf(stderr,
                   "usage: bench_small_gemm [--filter S] [--rounds N] [--iters N] [--only sgemm|direct]\n");
      return 2;
    }
  }
  std::unique_ptr<Backend> be = MakeCpuBackend();
  std::printf("cpu: %s\nkernels: %s\n", cpu::CpuFeaturesString().c_str(), cpu::CpuKernelSetString().c_str());
  std::printf("bench_small_gemm: %d threads, %s\n", NumThreads(), OPENBLAS_VERSION);

  const Model models[] = {{"tiny", 192, 64, 96, 16, 264}, {"small", 1024, 256, 512, 32, 32000}};
  for (const Model& md : models) {
    // Dense: (out, in) of the model's nn.Linear layers.
    const std::vector<std::pair<const char*, std::pair<int64_t, int64_t>>> linears = {
        {"q/o", {md.hidden, md.hidden}}, {"kv", {md.kv, md.hidden}}, {"router", {md.experts, md.hidden}},
        {"expert_up", {md.expert, md.hidden}}, {"expert_down", {md.hidden, md.expert}},
        {"lm_head", {md.vocab, md.hidden}}};
    for (const auto& [lname, dims] : linears) {
      const auto [out, in] = dims;
      Tensor w;  // created at the first case that passes the filter
      for (int64_t m : {1, 2, 4, 8, 16}) {
        for (bool tb : {true, false}) {
          // tb: y[m,out] = x[m,in] W^T; !tb: dx[m,in] = dy[m,out] W.
          const int64_t k = tb ? in : out, n = tb ? out : in;
          const std::string name = std::string(md.name) + " " + lname + (tb ? " xW^T" : " dyW ") + " m=" +
                                   std::to_string(m);
          if (!Matches(name, o.filter)) continue;
          if (!w.defined()) w = RandomTensor(*be, {out, in}, 1);
          auto a = std::make_shared<Tensor>(RandomTensor(*be, {m, k}, 2));
          auto c = std::make_shared<Tensor>(*be->Alloc({m, n}, DType::kF32));
          Case cs{name,
                  [=] {
                    cpu::Sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, 1.0f,
                                a->data<float>(), k, w.data<float>(), in, 0.0f, c->data<float>(), n);
                  },
                  [=, &be] { (void)be->Matmul(*a, false, w, tb, *c, 1.0f, 0.0f); },
                  [=] {
                    if (tb) {
                      cpu::SmallGemmNT(m, n, k, 1.0f, a->data<float>(), k, w.data<float>(), in, 0.0f,
                                       c->data<float>(), n, cpu::SmallGemmBFor(n, k, sizeof(float)));
                    } else {
                      cpu::SmallGemmNN(m, n, k, 1.0f, a->data<float>(), k, w.data<float>(), in, 0.0f,
                                       c->data<float>(), n);
                    }
                  }};
          RunCase(cs, o);
        }
      }
    }
    // Grouped: 8..128 groups of 1-3 rows, forward (up: in=hidden, out=expert; down) and input grad.
    for (int64_t ng : {8, 32, 64, 128}) {
      if (std::string(md.name) == "small" && ng > 32) continue;  // weights would exceed the caches anyway
      for (int dir = 0; dir < 2; ++dir) {
        const int64_t out = dir == 0 ? md.expert : md.hidden, in = dir == 0 ? md.hidden : md.expert;
        const bool any = o.filter.empty() || o.filter.find("grouped") != std::string::npos;
        if (!any) continue;
        auto weights = std::make_shared<std::vector<Tensor>>();
        for (int64_t i = 0; i < std::min<int64_t>(ng, 32); ++i) {
          weights->push_back(RandomTensor(*be, {out, in}, 10 + static_cast<uint32_t>(i)));
        }
        auto groups = std::make_shared<std::vector<GemmGroup>>();
        int64_t rows = 0;
        for (int64_t i = 0; i < ng; ++i) {
          const int64_t r = 1 + i % 3;
          groups->push_back({rows, r, &(*weights)[i % weights->size()], nullptr});
          rows += r;
        }
        auto x = std::make_shared<Tensor>(RandomTensor(*be, {rows, in}, 3));
        auto y = std::make_shared<Tensor>(RandomTensor(*be, {rows, out}, 4));
        auto dy = std::make_shared<Tensor>(RandomTensor(*be, {rows, out}, 5));
        auto dx = std::make_shared<Tensor>(RandomTensor(*be, {rows, in}, 6));
        for (bool grad : {false, true}) {
          const std::string name = std::string(md.name) + (dir == 0 ? " grouped_up " : " grouped_down ") +
                                   (grad ? "igrad" : "fwd  ") + " G=" + std::to_string(ng) + " rows=" +
                                   std::to_string(rows);
          if (!Matches(name, o.filter)) continue;
          Case cs;
          cs.name = name;
          if (!grad) {
            cs.sgemm = [=] {
              SgemmGroups(*groups, static_cast<double>(in) * out, [&](const GemmGroup& g) {
                cpu::Sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.rows, out, in, 1.0f,
                            x->data<float>() + g.row_begin * in, in, g.weight->data<float>(), in, 0.0f,
                            y->data<float>() + g.row_begin * out, out);
              });
            };
            cs.direct = [=, &be] { (void)be->GroupedMatmul(*x, *groups, *y); };
          } else {
            cs.sgemm = [=] {
              SgemmGroups(*groups, static_cast<double>(in) * out, [&](const GemmGroup& g) {
                cpu::Sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.rows, in, out, 1.0f,
                            dy->data<float>() + g.row_begin * out, out, g.weight->data<float>(), in, 0.0f,
                            dx->data<float>() + g.row_begin * in, in);
              });
            };
            cs.direct = [=, &be] { (void)be->GroupedMatmulInputGrad(*dy, *groups, *dx); };
          }
          RunCase(cs, o);
        }
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return tessera::Main(argc, argv); }
