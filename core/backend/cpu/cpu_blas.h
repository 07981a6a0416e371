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
// Threads: the library is loaded with OPENBLAS_NUM_THREADS = the process's thread budget
// (core/util/thread_budget.h) unless the user set that variable and no --threads was given, and a product
// OpenBLAS threads (m*n*k above its single-thread limit) runs under RunExclusive (core/util/parallel.h), so
// the BLAS's threads and Tessera's pool never run at once.
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
  int threads = 0;              // openblas_get_num_threads after load
  bool user_threads = false;    // OPENBLAS_NUM_THREADS set by the user (and no --threads): left as set
  bool degraded = false;    // core differs from core_wanted
  decltype(&cblas_sgemm) sgemm = nullptr;
};

// Loads the library on the first call (thread-safe); call it early (MakeCpuBackend does), before
// threads that might read the environment start.
const BlasInfo& Blas();

// OpenBLAS runs products up to this m*n*k on the calling thread (65536 * GEMM_MULTITHREAD_THRESHOLD).
constexpr double kBlasSingleThreadMnk = 65536.0 * 4;

// cblas_sgemm of the loaded library; a product the library would thread runs under RunExclusive.
inline void Sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, blasint m, blasint n, blasint k,
                  float alpha, const float* a, blasint lda, const float* b, blasint ldb, float beta, float* c,
                  blasint ldc) {
  const BlasInfo& blas = Blas();
  if (blas.threads > 1 && static_cast<double>(m) * n * k > kBlasSingleThreadMnk) {
    RunExclusive([&] { blas.sgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc); });
    return;
  }
  blas.sgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace tessera::cpu
