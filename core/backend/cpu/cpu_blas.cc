// Loading OpenBLAS with the core type of the CPU's features (see cpu_blas.h).
#include "core/backend/cpu/cpu_blas.h"

#include <dlfcn.h>
#include <strings.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/backend/cpu/cpu_features.h"
#include "core/util/parallel.h"
#include "core/util/thread_budget.h"

namespace tessera::cpu {
namespace {

// The runtime soname of Debian's libopenblas0 (the update-alternatives link to the pthread or openmp
// build); the build's own path as a fallback.
constexpr const char* kLibraries[] = {"libopenblas.so.0", TESSERA_OPENBLAS_LIBRARY};
// OPENBLAS_THREAD_TIMEOUT: workers spin 2^4 cycles, then sleep (see cpu_blas.h).
constexpr const char* kThreadTimeout = "4";

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "tessera: cannot load OpenBLAS for the CPU backend: %s (install libopenblas0, see ops/install-deps.sh)\n",
               what.c_str());
  std::abort();
}

BlasInfo Load() {
  BlasInfo info;
  info.core_wanted = ChooseKernelSet(ProbeCpu()).blas_core;
  bool preloaded = false;
  for (const char* lib : kLibraries) {
    if (void* h = dlopen(lib, RTLD_NOW | RTLD_NOLOAD)) {
      preloaded = true;  // linked or loaded by someone else: its core type is fixed already
      dlclose(h);
    }
  }
  const char* user = std::getenv("OPENBLAS_CORETYPE");
  info.user_core = user != nullptr && *user != '\0';
  if (!info.user_core && !preloaded) setenv("OPENBLAS_CORETYPE", info.core_wanted.c_str(), 1);
  // Idle workers sleep at once instead of spinning ~0.1 s (cpu_blas.h).
  const char* timeout = std::getenv("OPENBLAS_THREAD_TIMEOUT");
  info.user_thread_timeout = timeout != nullptr && *timeout != '\0';
  if (!info.user_thread_timeout && !preloaded) setenv("OPENBLAS_THREAD_TIMEOUT", kThreadTimeout, 1);
  if (!preloaded) info.thread_timeout = std::getenv("OPENBLAS_THREAD_TIMEOUT");
  // Single-threaded: Tessera's pool splits the products (cpu_blas.h).
  const char* user_threads = std::getenv("OPENBLAS_NUM_THREADS");
  if (user_threads != nullptr && *user_threads != '\0') info.user_threads = user_threads;
  if (!preloaded) setenv("OPENBLAS_NUM_THREADS", "1", 1);
  void* handle = nullptr;
  std::string errors;
  for (const char* lib : kLibraries) {
    handle = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (handle != nullptr) {
      info.library = lib;
      break;
    }
    const char* e = dlerror();
    absl::StrAppend(&errors, errors.empty() ? "" : "; ", e != nullptr ? e : lib);
  }
  if (handle == nullptr) Fail(errors);
  info.sgemm = reinterpret_cast<decltype(&cblas_sgemm)>(dlsym(handle, "cblas_sgemm"));
  if (info.sgemm == nullptr) Fail(absl::StrCat(info.library, " has no cblas_sgemm"));
  using NameFn = char* (*)();
  if (auto corename = reinterpret_cast<NameFn>(dlsym(handle, "openblas_get_corename"))) info.core = corename();
  if (auto config = reinterpret_cast<NameFn>(dlsym(handle, "openblas_get_config"))) info.config = config();
  using CountFn = int (*)();
  if (auto count = reinterpret_cast<CountFn>(dlsym(handle, "openblas_get_num_threads"))) info.threads = count();
  info.degraded = strcasecmp(info.core.c_str(), info.core_wanted.c_str()) != 0;
  if (preloaded && info.degraded) info.config += " (library was loaded before Tessera set its core type)";
  return info;
}

}  // namespace

const BlasInfo& Blas() {
  static const BlasInfo info = Load();
  return info;
}

void Sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, blasint m, blasint n, blasint k,
           float alpha, const float* a, blasint lda, const float* b, blasint ldb, float beta, float* c,
           blasint ldc) {
  const BlasInfo& blas = Blas();
  const int threads = NumThreads();
  if (static_cast<double>(m) * n * k <= kBlasSingleThreadMnk || order != CblasRowMajor || threads == 1) {
    blas.sgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (blas.threads > 1) {  // preloaded with its own threads (cpu_blas.h)
    RunExclusive([&] { blas.sgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc); });
    return;
  }
  // Blocks of rows, or of whole 64-column panels. ParallelFor hands each thread one contiguous range
  // of blocks (or, inside a region, all of them to the caller), which is then a single call.
  const bool by_rows = m >= int64_t{kSgemmMinRowsPerThread} * threads;
  constexpr int64_t kPanel = 64;
  const int64_t units = by_rows ? m : (n + kPanel - 1) / kPanel;
  const int64_t parts = std::min<int64_t>(threads, units);
  const int64_t per_part = (units + parts - 1) / parts;
  ParallelFor(parts, 1, [&](int64_t p0, int64_t p1) {
    const int64_t u0 = p0 * per_part, u1 = std::min(units, p1 * per_part);
    if (u0 >= u1) return;
    if (by_rows) {
      const float* pa = ta == CblasNoTrans ? a + u0 * lda : a + u0;
      blas.sgemm(order, ta, tb, static_cast<blasint>(u1 - u0), n, k, alpha, pa, lda, b, ldb, beta, c + u0 * ldc,
                 ldc);
    } else {
      const int64_t j0 = u0 * kPanel, j1 = std::min<int64_t>(n, u1 * kPanel);
      const float* pb = tb == CblasNoTrans ? b + j0 : b + j0 * ldb;
      blas.sgemm(order, ta, tb, m, static_cast<blasint>(j1 - j0), k, alpha, a, lda, pb, ldb, beta, c + j0, ldc);
    }
  });
}

std::string CpuFeaturesString() { return FeatureString(ProbeCpu()); }

std::string CpuKernelSetString() {
  const BlasInfo& b = Blas();
  const KernelSet k = ChooseKernelSet(ProbeCpu());
  std::string blas = absl::StrCat("openblas:", b.core);
  if (b.degraded) {
    absl::StrAppend(&blas, "(DEGRADED: wanted ", b.core_wanted,
                    b.user_core ? absl::StrCat("; OPENBLAS_CORETYPE=", std::getenv("OPENBLAS_CORETYPE"), " set by the user")
                                : std::string(), ")");
  } else if (b.user_core) {
    absl::StrAppend(&blas, "(OPENBLAS_CORETYPE set by the user)");
  }
  if (!b.thread_timeout.empty()) {
    absl::StrAppend(&blas, " blas_thread_timeout=", b.thread_timeout, b.user_thread_timeout ? "(set by the user)" : "");
  }
  absl::StrAppend(&blas, " pool_threads=", ThreadBudget(), " blas_threads=", b.threads,
                  b.user_threads.empty() || b.threads != 1
                      ? std::string()
                      : absl::StrCat("(OPENBLAS_NUM_THREADS=", b.user_threads, " overridden: the pool threads the BLAS)"));
  return absl::StrCat("blas=", blas, " small_gemm=", IsaName(k.small_gemm), " bf16_gemm=", IsaName(k.bf16_gemm));
}

}  // namespace tessera::cpu
