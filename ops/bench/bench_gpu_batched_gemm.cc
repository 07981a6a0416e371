// GPU experiment: can cuBLAS's classic batched GEMM APIs run the MoE expert GEMM near dense speed where
// cublasGemmGroupedBatchedEx does not? An H100 run measured the grouped API at 0.34-0.40 of one dense
// GEMM of the same FLOPs (goal: >= 0.6), and cutting every expert into equal 128-row chunks through the
// grouped API with one group did not help. Untested until this program: cublasGemmBatchedEx (device
// pointer arrays) and cublasGemmStridedBatchedEx on equal-shape problems, and "full chunks through
// cublasGemmBatchedEx + remainders through the grouped API".
//
// Shapes (Qwen3-MoE expert layer, gate/up forward): hidden K = 2048, expert width N = 768, 64 experts,
// 4096 tokens x top-8 = 32768 routed rows; bf16 A/B/C, CUBLAS_COMPUTE_32F, alpha 1, beta 0. Column-major,
// for every expert e: C_e[N x M_e] = W_e[N x K] * X_e[K x M_e], where X_e / C_e are consecutive column
// blocks of one X[K x 32768] / C[N x 32768] and W_e is slice e of one [64][N*K] buffer. W_e is stored
// the way the project stores an expert weight (row-major [N, K], i.e. column-major K x N, ld K) and
// passed with CUBLAS_OP_T, exactly as CudaBackend::CublasGrouped and Matmul do for the forward;
// `--w-op=n` stores it column-major N x K (ld N) with CUBLAS_OP_N instead. Routings: `uniform` (every
// M_e = 512) and `skewed` (Zipf-like, p_e ~ 1/(e+1), fixed seed, 32768 draws, each M_e >= 1).
//
// Variants (every one writes the same C; timed as the median of 7 rounds of 20 calls, cudaEvents around
// each round, after 3 warm-up calls):
//   dense      one cublasGemmEx with M = 32768 (same FLOPs; W_0 for every column)
//   grouped    cublasGemmGroupedBatchedEx, one group per distinct M_e (what the project does today)
//   batched    (uniform only) cublasGemmBatchedEx over the 64 equal problems
//   strided    (uniform only) cublasGemmStridedBatchedEx over the 64 equal problems
//   chunks<C>  C in {128, 256, 512}: every expert's columns cut into full chunks of C, all of them in one
//              cublasGemmBatchedEx (W_e's pointer repeated per chunk), plus the remainders (M_e mod C,
//              when > 0) in one cublasGemmGroupedBatchedEx (one group per distinct remainder); both calls
//              are one timed "call".
// All pointer arrays (and the grouped API's host parameter arrays) are built and uploaded ONCE, outside
// the timing. The runtime would rebuild and upload them on every call (a few KiB host-to-device, which
// the project's grouped path pays today), so these times are a slight lower bound for that.
//
// Prints
//   device name=<gpu> sms=<n> ...                          (setup)
//   routing name=<r> min=<rows> max=<rows> distinct=<n>    (rows per expert)
//   plan routing=<r> impl=chunks<C> full_chunks=<n> remainder_problems=<n> remainder_groups=<n>
//   gemm routing=<r> impl=<name> ms=<per call> tflops=<x> ratio=<tflops / dense tflops of that routing>
//   part routing=<r> impl=chunks<C> piece=<full|remainder> ms=<per call>   (the two calls timed alone)
//   check routing=<r> impl=<name> rel_l2=<x> ok=<0|1>
// Checks: every non-dense variant against the grouped variant's C (relative L2 over all of C on the host;
// ok when <= 1e-3: same math, only the accumulation order may differ), and the grouped and dense results
// against a double-precision host GEMM on 64 sampled columns (impl=grouped_vs_host / dense_vs_host, ok
// when <= 1e-2: bf16 output rounding; these two also fail on any NaN left in their C: `nan=<count>`).
// C is filled with NaN before each checked run, so a problem left out cannot pass. A failed check sets
// exit code 3 (the run goes on) and that variant is left out of the summary. Last line:
//   best_batched_vs_dense=<highest ratio of batched/strided/chunks* on uniform and chunks* on skewed>
//   best_chunks_skewed_vs_dense=<highest chunks* ratio on skewed>
// Without a CUDA device it prints `SKIP: ...` and exits 0; a failed CUDA/cuBLAS call prints
// `FAILED <call>: <code>` and exits 1. Runtime on an H100: a few seconds (mostly host-side data setup).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr int kK = 2048, kN = 768, kExperts = 64, kTokens = 4096, kTopK = 8;
constexpr int kRows = kTokens * kTopK;  // 32768 routed rows (columns of X and C)
constexpr int kWarmup = 3, kRounds = 7, kCalls = 20;
constexpr double kCheckTol = 1e-3, kHostTol = 1e-2;
constexpr int kHostSamples = 64;

[[noreturn]] void Fail(const char* call, int code, const char* name) {
  std::fflush(stdout);
  std::fprintf(stderr, "FAILED %s: %d (%s)\n", call, code, name);
  std::exit(1);
}

#define CUDA_CHECK(call)                                                             \
  do {                                                                               \
    const cudaError_t e_ = (call);                                                   \
    if (e_ != cudaSuccess) Fail(#call, static_cast<int>(e_), cudaGetErrorName(e_)); \
  } while (0)

#define CUBLAS_CHECK(call)                                                                      \
  do {                                                                                          \
    const cublasStatus_t s_ = (call);                                                           \
    if (s_ != CUBLAS_STATUS_SUCCESS) Fail(#call, static_cast<int>(s_), cublasGetStatusName(s_)); \
  } while (0)

using bf16 = uint16_t;  // raw bf16 bits; cuBLAS is told CUDA_R_16BF

float Bf16ToFloat(bf16 h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

bf16 FloatToBf16(float f) {  // round to nearest even (inputs are finite)
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<bf16>(u >> 16);
}

// Uniform values in [-scale, scale), rounded to bf16 (splitmix64: fast for ~170M values).
void FillRandom(std::vector<bf16>& v, uint64_t seed, float scale) {
  uint64_t s = seed;
  for (bf16& x : v) {
    s += 0x9E3779B97F4A7C15ull;
    uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    x = FloatToBf16((2.0f * u - 1.0f) * scale);
  }
}

// Rows per expert: uniform (512 each) or skewed (Zipf-like, s = 1, as bench_gpu_grouped_gemm), each >= 1.
std::vector<int> RowsPerExpert(bool skewed) {
  std::vector<int> rows(kExperts, kRows / kExperts);
  if (!skewed) return rows;
  std::mt19937 rng(7);
  std::vector<double> p(kExperts);
  for (int e = 0; e < kExperts; ++e) p[e] = 1.0 / (e + 1);
  std::discrete_distribution<int> pick(p.begin(), p.end());
  std::fill(rows.begin(), rows.end(), 0);
  for (int i = 0; i < kRows; ++i) ++rows[pick(rng)];
  for (int e = 0; e < kExperts; ++e) {
    if (rows[e] == 0) {  // never empty: take one row from the largest expert
      --*std::max_element(rows.begin(), rows.end());
      rows[e] = 1;
    }
  }
  return rows;
}

// One expert GEMM (or a chunk of one): columns [col, col + cols) of X and C, weight of `expert`.
struct Problem {
  int expert;
  int64_t col;
  int cols;
};

struct Ctx {
  cudaStream_t stream = nullptr;
  cublasHandle_t handle = nullptr;
  cublasOperation_t op_w = CUBLAS_OP_T;
  int ld_w = kK;
  bf16* w = nullptr;      // [64][N*K]
  bf16* x = nullptr;      // [K x kRows], ld K
  bf16* c_ref = nullptr;  // grouped result, [N x kRows], ld N
  bf16* c = nullptr;      // every other variant's result
  std::vector<void*> allocs;  // pointer tables, freed at the end

  const void* W(int e) const { return w + static_cast<int64_t>(e) * kN * kK; }
  const void* X(int64_t col) const { return x + col * kK; }
  void* C(bf16* out, int64_t col) const { return out + col * kN; }

  // Uploads [A..., B..., C...] for `probs` (in order) and returns the device table.
  void** Upload(const std::vector<Problem>& probs, bf16* out) {
    std::vector<const void*> h(3 * probs.size());
    for (size_t i = 0; i < probs.size(); ++i) {
      h[i] = W(probs[i].expert);
      h[probs.size() + i] = X(probs[i].col);
      h[2 * probs.size() + i] = C(out, probs[i].col);
    }
    void* d = nullptr;
    CUDA_CHECK(cudaMalloc(&d, h.size() * sizeof(void*)));
    allocs.push_back(d);
    CUDA_CHECK(cudaMemcpyAsync(d, h.data(), h.size() * sizeof(void*), cudaMemcpyHostToDevice, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));  // `h` dies here
    return static_cast<void**>(d);
  }
};

// cublasGemmGroupedBatchedEx over problems grouped by column count, mirroring CudaBackend::CublasGrouped:
// HOST arrays of per-group parameters, DEVICE arrays of pointers.
struct GroupedCall {
  std::vector<cublasOperation_t> ta, tb;
  std::vector<int> m, n, k, lda, ldb, ldc, size;
  std::vector<float> alpha, beta;
  void** table = nullptr;
  int total = 0;

  void Build(Ctx& ctx, const std::vector<Problem>& probs, bf16* out) {
    std::map<int, std::vector<Problem>> by_cols;
    for (const Problem& p : probs) by_cols[p.cols].push_back(p);
    std::vector<Problem> ordered;
    for (const auto& [cols, members] : by_cols) {
      ta.push_back(ctx.op_w);
      tb.push_back(CUBLAS_OP_N);
      m.push_back(kN);
      n.push_back(cols);
      k.push_back(kK);
      lda.push_back(ctx.ld_w);
      ldb.push_back(kK);
      ldc.push_back(kN);
      alpha.push_back(1.0f);
      beta.push_back(0.0f);
      size.push_back(static_cast<int>(members.size()));
      ordered.insert(ordered.end(), members.begin(), members.end());
    }
    total = static_cast<int>(ordered.size());
    if (total > 0) table = ctx.Upload(ordered, out);
  }
  int groups() const { return static_cast<int>(size.size()); }

  void Launch(const Ctx& ctx) const {
    if (total == 0) return;
    const void* const* t = table;
    CUBLAS_CHECK(cublasGemmGroupedBatchedEx(ctx.handle, ta.data(), tb.data(), m.data(), n.data(), k.data(),
                                            alpha.data(), t, CUDA_R_16BF, lda.data(), t + total, CUDA_R_16BF,
                                            ldb.data(), beta.data(), table + 2 * total, CUDA_R_16BF, ldc.data(),
                                            groups(), size.data(), CUBLAS_COMPUTE_32F));
  }
};

// cublasGemmBatchedEx over problems that all have `cols` columns.
struct BatchedCall {
  int cols = 0, count = 0;
  void** table = nullptr;

  void Build(Ctx& ctx, const std::vector<Problem>& probs, int c, bf16* out) {
    cols = c;
    count = static_cast<int>(probs.size());
    if (count > 0) table = ctx.Upload(probs, out);
  }

  void Launch(const Ctx& ctx) const {
    if (count == 0) return;
    const float alpha = 1.0f, beta = 0.0f;
    const void* const* t = table;
    CUBLAS_CHECK(cublasGemmBatchedEx(ctx.handle, ctx.op_w, CUBLAS_OP_N, kN, cols, kK, &alpha, t, CUDA_R_16BF,
                                     ctx.ld_w, t + count, CUDA_R_16BF, kK, &beta, table + 2 * count, CUDA_R_16BF,
                                     kN, count, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
};

// Median over kRounds rounds of kCalls calls (cudaEvents around each round), per call, in ms.
double MedianMs(const Ctx& ctx, cudaEvent_t start, cudaEvent_t stop, const std::function<void()>& call) {
  for (int i = 0; i < kWarmup; ++i) call();
  CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  std::vector<double> rounds;
  for (int r = 0; r < kRounds; ++r) {
    CUDA_CHECK(cudaEventRecord(start, ctx.stream));
    for (int i = 0; i < kCalls; ++i) call();
    CUDA_CHECK(cudaEventRecord(stop, ctx.stream));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    rounds.push_back(static_cast<double>(ms) / kCalls);
  }
  std::sort(rounds.begin(), rounds.end());
  return rounds[rounds.size() / 2];
}

std::vector<bf16> Download(const Ctx& ctx, const bf16* d) {
  std::vector<bf16> h(static_cast<size_t>(kN) * kRows);
  CUDA_CHECK(cudaMemcpyAsync(h.data(), d, h.size() * sizeof(bf16), cudaMemcpyDeviceToHost, ctx.stream));
  CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  return h;
}

// Relative L2 of `got` against `want` (NaN anywhere in `got` gives NaN, which fails every check).
size_t CountNaN(const std::vector<bf16>& v) {
  return static_cast<size_t>(std::count_if(v.begin(), v.end(), [](bf16 h) { return (h & 0x7FFF) > 0x7F80; }));
}

double RelL2(const std::vector<bf16>& got, const std::vector<bf16>& want) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = Bf16ToFloat(got[i]), w = Bf16ToFloat(want[i]);
    num += (g - w) * (g - w);
    den += w * w;
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

struct Host {
  std::vector<bf16> w, x;
};

// `got` against a double-precision host GEMM on kHostSamples columns (plus the first and the last one);
// `expert_of(col)` names the weight used for a column.
double HostRelL2(const Ctx& ctx, const Host& host, const std::vector<bf16>& got,
                 const std::function<int(int64_t)>& expert_of) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int64_t> pick(0, kRows - 1);
  std::vector<int64_t> cols = {0, kRows - 1};
  while (static_cast<int>(cols.size()) < kHostSamples) cols.push_back(pick(rng));
  double num = 0.0, den = 0.0;
  std::vector<double> wrow(kK), xcol(kK);
  for (int64_t col : cols) {
    const bf16* w = host.w.data() + static_cast<int64_t>(expert_of(col)) * kN * kK;
    for (int kk = 0; kk < kK; ++kk) xcol[kk] = Bf16ToFloat(host.x[col * kK + kk]);
    for (int n = 0; n < kN; ++n) {
      double acc = 0.0;
      for (int kk = 0; kk < kK; ++kk) {
        // op T: W_e stored column-major K x N (ld K); op N: column-major N x K (ld N).
        const bf16 wv = ctx.op_w == CUBLAS_OP_T ? w[static_cast<int64_t>(n) * kK + kk]
                                                : w[static_cast<int64_t>(kk) * kN + n];
        acc += static_cast<double>(Bf16ToFloat(wv)) * xcol[kk];
      }
      const double g = Bf16ToFloat(got[col * kN + n]);
      num += (g - acc) * (g - acc);
      den += acc * acc;
    }
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

int Main(int argc, char** argv) {
  cublasOperation_t op_w = CUBLAS_OP_T;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--w-op=t") {
      op_w = CUBLAS_OP_T;
    } else if (a == "--w-op=n") {
      op_w = CUBLAS_OP_N;
    } else {
      std::fprintf(stderr, "usage: %s [--w-op=t|n]\n", argv[0]);
      return 2;
    }
  }
  int devices = 0;
  const cudaError_t probe = cudaGetDeviceCount(&devices);
  if (probe != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device (%s)\n", probe != cudaSuccess ? cudaGetErrorName(probe) : "0 devices");
    return 0;
  }
  CUDA_CHECK(cudaSetDevice(0));
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));

  Ctx ctx;
  ctx.op_w = op_w;
  ctx.ld_w = op_w == CUBLAS_OP_T ? kK : kN;
  std::printf("device name=%s sms=%d experts=%d rows=%d hidden=%d width=%d dtype=bf16 compute=32f w_op=%s\n",
              prop.name, prop.multiProcessorCount, kExperts, kRows, kK, kN, op_w == CUBLAS_OP_T ? "t" : "n");
  std::fflush(stdout);
  CUDA_CHECK(cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking));
  CUBLAS_CHECK(cublasCreate(&ctx.handle));
  CUBLAS_CHECK(cublasSetStream(ctx.handle, ctx.stream));
  cudaEvent_t start = nullptr, stop = nullptr;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));

  // Data: W ~ U(-0.05, 0.05), X ~ U(-1, 1): outputs of order 0.5.
  Host host;
  host.w.resize(static_cast<size_t>(kExperts) * kN * kK);
  host.x.resize(static_cast<size_t>(kK) * kRows);
  FillRandom(host.w, 1, 0.05f);
  FillRandom(host.x, 2, 1.0f);
  const size_t c_bytes = static_cast<size_t>(kN) * kRows * sizeof(bf16);
  CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ctx.w), host.w.size() * sizeof(bf16)));
  CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ctx.x), host.x.size() * sizeof(bf16)));
  CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ctx.c_ref), c_bytes));
  CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ctx.c), c_bytes));
  // Everything runs on ctx.stream (non-blocking: no implicit order with the legacy default stream).
  CUDA_CHECK(cudaMemcpyAsync(ctx.w, host.w.data(), host.w.size() * sizeof(bf16), cudaMemcpyHostToDevice, ctx.stream));
  CUDA_CHECK(cudaMemcpyAsync(ctx.x, host.x.data(), host.x.size() * sizeof(bf16), cudaMemcpyHostToDevice, ctx.stream));
  CUDA_CHECK(cudaStreamSynchronize(ctx.stream));

  const double flops = 2.0 * kRows * static_cast<double>(kK) * kN;
  bool all_ok = true;
  double best_batched = 0.0, best_chunks_skewed = 0.0;

  for (bool skewed : {false, true}) {
    const char* routing = skewed ? "skewed" : "uniform";
    const std::vector<int> rows = RowsPerExpert(skewed);
    std::vector<int64_t> begin(kExperts + 1, 0);
    for (int e = 0; e < kExperts; ++e) begin[e + 1] = begin[e] + rows[e];
    const auto expert_of = [&](int64_t col) {
      return static_cast<int>(std::upper_bound(begin.begin(), begin.end(), col) - begin.begin()) - 1;
    };
    std::vector<int> sorted = rows;
    std::sort(sorted.begin(), sorted.end());
    const size_t distinct = static_cast<size_t>(std::unique(sorted.begin(), sorted.end()) - sorted.begin());
    std::printf("routing name=%s min=%d max=%d distinct=%zu\n", routing, sorted.front(), sorted.back(), distinct);

    // Dense reference: W_0 for all 32768 columns.
    const float one = 1.0f, zero = 0.0f;
    const auto dense = [&] {
      CUBLAS_CHECK(cublasGemmEx(ctx.handle, ctx.op_w, CUBLAS_OP_N, kN, kRows, kK, &one, ctx.W(0), CUDA_R_16BF,
                                ctx.ld_w, ctx.x, CUDA_R_16BF, kK, &zero, ctx.c, CUDA_R_16BF, kN, CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT));
    };
    CUDA_CHECK(cudaMemsetAsync(ctx.c, 0xFF, c_bytes, ctx.stream));  // bf16 0xFFFF is NaN
    dense();
    {
      const std::vector<bf16> got = Download(ctx, ctx.c);
      const double rel = HostRelL2(ctx, host, got, [](int64_t) { return 0; });
      const size_t nan = CountNaN(got);
      const bool ok = rel <= kHostTol && nan == 0;
      all_ok = all_ok && ok;
      std::printf("check routing=%s impl=dense_vs_host rel_l2=%.3e ok=%d nan=%zu\n", routing, rel, ok ? 1 : 0, nan);
    }
    const double dense_ms = MedianMs(ctx, start, stop, dense);
    const double dense_tflops = flops / (dense_ms * 1e-3) / 1e12;
    const auto report = [&](const char* impl, double ms) {
      const double tflops = flops / (ms * 1e-3) / 1e12;
      std::printf("gemm routing=%s impl=%s ms=%.4f tflops=%.1f ratio=%.3f\n", routing, impl, ms, tflops,
                  tflops / dense_tflops);
      std::fflush(stdout);
      return tflops / dense_tflops;
    };
    report("dense", dense_ms);

    // Grouped (today's path): one problem per expert, one group per distinct M_e. Its C is the reference.
    std::vector<Problem> experts;
    for (int e = 0; e < kExperts; ++e) experts.push_back(Problem{e, begin[e], rows[e]});
    GroupedCall grouped;
    grouped.Build(ctx, experts, ctx.c_ref);
    CUDA_CHECK(cudaMemsetAsync(ctx.c_ref, 0xFF, c_bytes, ctx.stream));
    grouped.Launch(ctx);
    const std::vector<bf16> ref = Download(ctx, ctx.c_ref);
    {
      const double rel = HostRelL2(ctx, host, ref, expert_of);
      const size_t nan = CountNaN(ref);  // a problem left out stays NaN
      const bool ok = rel <= kHostTol && nan == 0;
      all_ok = all_ok && ok;
      std::printf("check routing=%s impl=grouped_vs_host rel_l2=%.3e ok=%d nan=%zu groups=%d\n", routing, rel,
                  ok ? 1 : 0, nan, grouped.groups());
    }
    report("grouped", MedianMs(ctx, start, stop, [&] { grouped.Launch(ctx); }));

    // Runs `call` once into ctx.c (NaN-filled first), compares with the grouped C, then times it.
    // Returns the ratio, or 0 when the check failed.
    const auto variant = [&](const char* impl, const std::function<void()>& call) {
      CUDA_CHECK(cudaMemsetAsync(ctx.c, 0xFF, c_bytes, ctx.stream));
      call();
      const double rel = RelL2(Download(ctx, ctx.c), ref);
      const bool ok = rel <= kCheckTol;
      all_ok = all_ok && ok;
      std::printf("check routing=%s impl=%s rel_l2=%.3e ok=%d\n", routing, impl, rel, ok ? 1 : 0);
      const double ratio = report(impl, MedianMs(ctx, start, stop, call));
      return ok ? ratio : 0.0;
    };

    if (!skewed) {
      const int m = kRows / kExperts;
      BatchedCall batched;
      std::vector<Problem> equal;
      for (int e = 0; e < kExperts; ++e) equal.push_back(Problem{e, begin[e], m});
      batched.Build(ctx, equal, m, ctx.c);
      best_batched = std::max(best_batched, variant("batched", [&] { batched.Launch(ctx); }));
      best_batched = std::max(best_batched, variant("strided", [&] {
        const float alpha = 1.0f, beta = 0.0f;
        CUBLAS_CHECK(cublasGemmStridedBatchedEx(
            ctx.handle, ctx.op_w, CUBLAS_OP_N, kN, m, kK, &alpha, ctx.w, CUDA_R_16BF, ctx.ld_w,
            static_cast<long long>(kN) * kK, ctx.x, CUDA_R_16BF, kK, static_cast<long long>(kK) * m, &beta, ctx.c,
            CUDA_R_16BF, kN, static_cast<long long>(kN) * m, kExperts, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      }));
    }

    for (int chunk : {128, 256, 512}) {
      std::vector<Problem> full, rest;
      for (int e = 0; e < kExperts; ++e) {
        int64_t col = begin[e];
        for (int j = 0; j < rows[e] / chunk; ++j, col += chunk) full.push_back(Problem{e, col, chunk});
        if (rows[e] % chunk > 0) rest.push_back(Problem{e, col, rows[e] % chunk});
      }
      BatchedCall full_call;
      full_call.Build(ctx, full, chunk, ctx.c);
      GroupedCall rest_call;
      rest_call.Build(ctx, rest, ctx.c);
      const std::string impl = "chunks" + std::to_string(chunk);
      std::printf("plan routing=%s impl=%s full_chunks=%zu remainder_problems=%zu remainder_groups=%d\n", routing,
                  impl.c_str(), full.size(), rest.size(), rest_call.groups());
      const double ratio = variant(impl.c_str(), [&] {
        full_call.Launch(ctx);
        rest_call.Launch(ctx);
      });
      if (full_call.count > 0 && rest_call.total > 0) {  // where the time goes
        std::printf("part routing=%s impl=%s piece=full ms=%.4f\n", routing, impl.c_str(),
                    MedianMs(ctx, start, stop, [&] { full_call.Launch(ctx); }));
        std::printf("part routing=%s impl=%s piece=remainder ms=%.4f\n", routing, impl.c_str(),
                    MedianMs(ctx, start, stop, [&] { rest_call.Launch(ctx); }));
      }
      best_batched = std::max(best_batched, ratio);
      if (skewed) best_chunks_skewed = std::max(best_chunks_skewed, ratio);
    }
  }

  CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  for (void* p : ctx.allocs) CUDA_CHECK(cudaFree(p));
  CUDA_CHECK(cudaFree(ctx.w));
  CUDA_CHECK(cudaFree(ctx.x));
  CUDA_CHECK(cudaFree(ctx.c_ref));
  CUDA_CHECK(cudaFree(ctx.c));
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  CUBLAS_CHECK(cublasDestroy(ctx.handle));
  CUDA_CHECK(cudaStreamDestroy(ctx.stream));
  std::printf("best_batched_vs_dense=%.3f best_chunks_skewed_vs_dense=%.3f\n", best_batched, best_chunks_skewed);
  return all_ok ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
