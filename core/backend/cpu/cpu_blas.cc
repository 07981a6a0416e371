// Loading OpenBLAS with the core type of the CPU's features (see cpu_blas.h).
#include "core/backend/cpu/cpu_blas.h"

#include <dlfcn.h>
#include <strings.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/backend/cpu/cpu_features.h"
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
  // One thread budget for the BLAS and Tessera's pool (core/util/thread_budget.h).
  const char* user_threads = std::getenv("OPENBLAS_NUM_THREADS");
  info.user_threads = user_threads != nullptr && *user_threads != '\0' && !ThreadBudgetFromFlag();
  if (!info.user_threads && !preloaded) {
    setenv("OPENBLAS_NUM_THREADS", std::to_string(ThreadBudget()).c_str(), 1);
  }
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
                  b.user_threads ? "(OPENBLAS_NUM_THREADS set by the user)" : "");
  return absl::StrCat("blas=", blas, " small_gemm=", IsaName(k.small_gemm), " bf16_gemm=", IsaName(k.bf16_gemm));
}

}  // namespace tessera::cpu
