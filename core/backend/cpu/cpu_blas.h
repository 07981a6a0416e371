// The CPU backend's BLAS, loaded so that its kernels follow the CPU's features.
//
// Debian's OpenBLAS is a DYNAMIC_ARCH build: when the library initializes (at load) it picks its kernels
// from a table of CPU models, unless OPENBLAS_CORETYPE names a core type. A CPU newer than its table is
// taken for an old one (issue 17: an AVX-512 Xeon, family 6 model 207, became "Prescott", SSE3 only: sgemm
// 62 vs 222-232 GFLOP/s). So Tessera does not link OpenBLAS: at first use it sets OPENBLAS_CORETYPE to the
// core type ChooseKernelSet derives from cpuid (unless the user set one: then it is kept, and reported),
// then loads the library with dlopen and resolves cblas_sgemm. The loaded core type
// (openblas_get_corename) is compared with the wanted one and a mismatch is reported as "DEGRADED" in the
// kernel set string that tessera-server and every bench print and GetRuntimeStatus returns.
// Why this mechanism: ops/bench/RESULTS.md "CPU kernel choice" (bench_gemm_kernels: OpenBLAS forced from
// the features vs BLIS 0.9 vs oneDNN 2.6 sgemm vs OpenBLAS forced to Prescott, same shapes, same run).
//
// Idle workers: OpenBLAS's worker threads spin on sched_yield for 2^28 cycles (~0.1 s) after each call
// before they sleep. A server calls the BLAS every few milliseconds, so its workers never slept and burnt
// a core between calls: in bench_serve's profile 36% of the server's CPU was sched_yield, and the CPU per
// request fell from 5.5-5.9 to 3.8-4.1 ms with the spin cut (same throughput; bench_forward and
// bench_train unchanged: ops/bench/RESULTS.md "Idle BLAS workers"). A training job sharing the cores
// gets that core back. So Tessera also sets OPENBLAS_THREAD_TIMEOUT=4 (the library's minimum: workers
// sleep at once and are woken per call) unless the user set it; the value in force is reported.
//
// Threads: the library is loaded single-threaded (OPENBLAS_NUM_THREADS=1, over any value in the
// environment), and Sgemm below splits a product above the library's own single-thread limit into
// row or column blocks run by Tessera's pool (core/util/parallel.h). So there is one set of compute
// threads, sized by the process's thread budget (core/util/thread_budget.h), and a product called from
// inside a parallel region (an MoE layer's expert groups run concurrently, one per pool thread) runs on
// its caller's thread instead of waking BLAS threads that compete with the region's. Measured on a
// 2-core AMD EPYC (Zen 3) against OpenBLAS's own 2 threads (ops/bench/RESULTS.md "One pool for the BLAS",
// alternating runs): bench_forward prefill of the 'small' config 716-765 vs 480-562 tok/s; bench_train's
// expert products 18-20% less time, the dense ones within noise.
// A library loaded before Tessera (linked by a tool) keeps its threads; its threaded products then run
// under RunExclusive, so they and the pool take turns.
//
// Failure: without the library no GEMM can run; the first use prints what to install and aborts.
#pragma once

#include <cblas.h>

#include <string>

#include "core/backend/cpu/cpu_kernel_set.h"  // CpuFeaturesString, CpuKernelSetString
#include "core/util/parallel.h"

namespace tessera::cpu {

struct BlasInfo {
  std::string library;      // what was dlopen'ed
  std::string core_wanted;  // from ChooseKernelSet(ProbeCpu())
  std::string core;         // what the library runs (openblas_get_corename)
  std::string config;       // openblas_get_config
  bool user_core = false;   // OPENBLAS_CORETYPE was set before Tessera looked (left as the user set it)
  std::string thread_timeout;  // OPENBLAS_THREAD_TIMEOUT in force at load ("" when the library was preloaded)
  bool user_thread_timeout = false;  // set by the user (left as set)
  int threads = 0;              // openblas_get_num_threads after load (1 unless preloaded)
  std::string user_threads;     // OPENBLAS_NUM_THREADS found in the environment (overridden with 1)
  bool degraded = false;    // core differs from core_wanted
  decltype(&cblas_sgemm) sgemm = nullptr;
};

// Loads the library on the first call (thread-safe); call it early (MakeCpuBackend does), before
// threads that might read the environment start.
const BlasInfo& Blas();

// OpenBLAS runs products up to this m*n*k on the calling thread (65536 * GEMM_MULTITHREAD_THRESHOLD);
// Sgemm splits larger ones over the pool.
constexpr double kBlasSingleThreadMnk = 65536.0 * 4;
// Sgemm splits rows when each thread gets at least this many (one OpenBLAS M block's worth), else
// columns: 2-core Zen 3, 512x1536x1024 NT: rows 155 GFLOP/s, columns 80; 128x512x1024 NT: columns 138,
// rows 125.
constexpr int kSgemmMinRowsPerThread = 64;

// cblas_sgemm of the loaded library, row-major. A product above kBlasSingleThreadMnk is split over the
// pool: into row blocks when every thread gets at least kSgemmMinRowsPerThread rows, else into column
// blocks of whole 64-column panels; from inside a parallel region it runs on the calling thread.
void Sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, blasint m, blasint n, blasint k,
           float alpha, const float* a, blasint lda, const float* b, blasint ldb, float beta, float* c,
           blasint ldc);

}  // namespace tessera::cpu
