// The CPU feature probe's parsing (recorded cpuid/xgetbv registers of several CPUs), the kernel choice
// as a pure function of the features, the probe on this CPU against GCC's own (__builtin_cpu_supports),
// and the BLAS loaded with the chosen core type (cpu_features.h, cpu_blas.h).
#include "core/backend/cpu/cpu_features.h"

#include <time.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "core/backend/cpu/cpu_blas.h"
#include "core/util/thread_budget.h"
#include "gtest/gtest.h"

namespace tessera::cpu {
namespace {

constexpr uint32_t B(int bit) { return 1u << bit; }

// leaf 0 vendor registers from a 12-character string (ebx, edx, ecx order).
void SetVendor(CpuidRaw& r, const char* v) { std::memcpy(r.vendor, v, 12); }

// The leaf-1 eax signature of a display family/model.
uint32_t Signature(int family, int model) {
  const uint32_t base_family = family >= 0xf ? 0xf : family;
  const uint32_t ext_family = family >= 0xf ? family - 0xf : 0;
  return (ext_family << 20) | ((model >> 4) << 16) | (base_family << 8) | ((model & 0xf) << 4) | 1;
}

// An AVX-512 + AMX server part as the OS reports it: Intel family 6 model 207 (the CPU, which
// OpenBLAS 0.3.21 took for "Prescott").
CpuidRaw Model207() {
  CpuidRaw r;
  r.max_leaf = 0x20;
  SetVendor(r, "GenuineIntel");
  r.leaf1_eax = Signature(6, 207);
  r.leaf1_ecx = B(0) | B(12) | B(27) | B(28) | B(29);  // sse3 fma osxsave avx f16c
  r.leaf7_ebx = B(5) | B(16) | B(17) | B(28) | B(30) | B(31);  // avx2 avx512 f dq cd bw vl
  r.leaf7_ecx = B(11);                                         // avx512_vnni
  r.leaf7_edx = B(22) | B(23) | B(24) | B(25);                 // amx_bf16 avx512_fp16 amx_tile amx_int8
  r.leaf7_1_eax = B(5);                                        // avx512_bf16
  r.xcr0 = 0x602e7;                                            // x87 sse avx opmask zmm_hi256 hi16_zmm pkru xtile
  std::strcpy(r.brand, "   INTEL(R) XEON(R) PLATINUM 8592+   ");
  return r;
}

TEST(CpuFeaturesTest, ParsesAnAvx512AmxServerPart) {
  const CpuFeatures f = ParseCpuid(Model207());
  EXPECT_EQ(f.vendor, "GenuineIntel");
  EXPECT_EQ(f.family, 6);
  EXPECT_EQ(f.model, 207);
  EXPECT_EQ(f.brand, "INTEL(R) XEON(R) PLATINUM 8592+");  // padding trimmed
  EXPECT_TRUE(f.sse3 && f.avx && f.avx2 && f.fma && f.f16c);
  EXPECT_TRUE(f.HasAvx512Core());
  EXPECT_TRUE(f.avx512_vnni && f.avx512_bf16 && f.avx512_fp16);
  EXPECT_TRUE(f.amx_tile && f.amx_bf16 && f.amx_int8);
  const KernelSet k = ChooseKernelSet(f);
  EXPECT_EQ(k.blas_core, "Cooperlake");
  EXPECT_EQ(k.small_gemm, SmallGemmIsa::kAvx512);
  EXPECT_EQ(k.bf16_gemm, Bf16GemmIsa::kAvx512Bf16);
  EXPECT_EQ(FeatureString(f),
            "GenuineIntel family 6 model 207 'INTEL(R) XEON(R) PLATINUM 8592+': sse3 avx avx2 fma f16c avx512f "
            "avx512dq avx512cd avx512bw avx512vl avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_bf16 amx_int8");
}

TEST(CpuFeaturesTest, FeaturesTheOsDoesNotSaveDoNotCount) {
  CpuidRaw r = Model207();
  r.xcr0 = 0x7;  // the kernel saves x87/SSE/AVX state only (e.g. AVX-512 disabled by the hypervisor/OS)
  CpuFeatures f = ParseCpuid(r);
  EXPECT_TRUE(f.avx2 && f.fma);
  EXPECT_FALSE(f.avx512f || f.avx512bw || f.avx512_bf16 || f.avx512_fp16);
  EXPECT_FALSE(f.amx_tile || f.amx_bf16);
  KernelSet k = ChooseKernelSet(f);
  EXPECT_EQ(k.blas_core, "Haswell");
  EXPECT_EQ(k.small_gemm, SmallGemmIsa::kAvx2);
  EXPECT_EQ(k.bf16_gemm, Bf16GemmIsa::kAvx2);

  r.xcr0 = 0xe7;  // AVX-512 saved, AMX tile data not
  f = ParseCpuid(r);
  EXPECT_TRUE(f.avx512_bf16);
  EXPECT_FALSE(f.amx_tile || f.amx_bf16);

  r.leaf1_ecx &= ~B(27);  // no OSXSAVE: xgetbv unusable, no AVX at all
  f = ParseCpuid(r);
  EXPECT_TRUE(f.sse3);
  EXPECT_FALSE(f.avx || f.avx2 || f.fma || f.avx512f);
  k = ChooseKernelSet(f);
  EXPECT_EQ(k.blas_core, "Prescott");
  EXPECT_EQ(k.small_gemm, SmallGemmIsa::kPortable);
  EXPECT_EQ(k.bf16_gemm, Bf16GemmIsa::kPortable);
}

TEST(CpuFeaturesTest, AmdZen4AndOlderParts) {
  CpuidRaw zen4 = Model207();
  SetVendor(zen4, "AuthenticAMD");
  zen4.leaf1_eax = Signature(0x19, 0x11);
  zen4.leaf7_edx = 0;  // no AMX, no FP16
  zen4.xcr0 = 0x2e7;
  std::strcpy(zen4.brand, "AMD EPYC 9R14 96-Core Processor");
  CpuFeatures f = ParseCpuid(zen4);
  EXPECT_EQ(f.family, 0x19);
  EXPECT_EQ(f.model, 0x11);
  EXPECT_TRUE(f.HasAvx512Core() && f.avx512_bf16);
  EXPECT_FALSE(f.avx512_fp16 || f.amx_bf16);
  EXPECT_EQ(ChooseKernelSet(f).blas_core, "Cooperlake");
  EXPECT_EQ(ChooseKernelSet(f).bf16_gemm, Bf16GemmIsa::kAvx512Bf16);

  CpuidRaw skx = Model207();  // AVX-512 without BF16 (Skylake-SP / Cascade Lake)
  skx.leaf1_eax = Signature(6, 85);
  skx.leaf7_1_eax = 0;
  skx.leaf7_edx = 0;
  f = ParseCpuid(skx);
  EXPECT_EQ(f.model, 85);
  EXPECT_EQ(ChooseKernelSet(f).blas_core, "SkylakeX");
  EXPECT_EQ(ChooseKernelSet(f).bf16_gemm, Bf16GemmIsa::kAvx512);

  CpuidRaw hsw = skx;  // AVX2 + FMA only
  hsw.leaf7_ebx = B(5);
  hsw.leaf7_ecx = 0;
  hsw.xcr0 = 0x7;
  f = ParseCpuid(hsw);
  EXPECT_EQ(ChooseKernelSet(f).blas_core, "Haswell");
  EXPECT_EQ(ChooseKernelSet(f).small_gemm, SmallGemmIsa::kAvx2);

  CpuidRaw snb = hsw;  // AVX without AVX2/FMA
  snb.leaf7_ebx = 0;
  snb.leaf1_ecx &= ~B(12);
  f = ParseCpuid(snb);
  EXPECT_TRUE(f.avx);
  EXPECT_EQ(ChooseKernelSet(f).blas_core, "Sandybridge");
  EXPECT_EQ(ChooseKernelSet(f).small_gemm, SmallGemmIsa::kPortable);

  CpuidRaw old = snb;  // max leaf below 7: leaf 7's registers are not read
  old.max_leaf = 5;
  f = ParseCpuid(old);
  EXPECT_FALSE(f.avx2 || f.avx512f);
  CpuidRaw none;  // cpuid leaf 0 only
  f = ParseCpuid(none);
  EXPECT_FALSE(f.sse3 || f.avx);
  EXPECT_EQ(ChooseKernelSet(f).blas_core, "Prescott");
}

// The probe on this CPU agrees with GCC's independent one (libgcc also checks XCR0).
TEST(CpuFeaturesTest, ProbeAgreesWithTheCompilerOnThisCpu) {
  const CpuFeatures& f = ProbeCpu();
  __builtin_cpu_init();
  EXPECT_EQ(f.avx2, static_cast<bool>(__builtin_cpu_supports("avx2")));
  EXPECT_EQ(f.fma, static_cast<bool>(__builtin_cpu_supports("fma")));
  EXPECT_EQ(f.avx512f, static_cast<bool>(__builtin_cpu_supports("avx512f")));
  EXPECT_EQ(f.avx512bw, static_cast<bool>(__builtin_cpu_supports("avx512bw")));
  EXPECT_EQ(f.avx512vl, static_cast<bool>(__builtin_cpu_supports("avx512vl")));
  EXPECT_EQ(f.avx512_bf16, static_cast<bool>(__builtin_cpu_supports("avx512bf16")));
  EXPECT_FALSE(f.vendor.empty());
  std::printf("this CPU: %s\nkernels: %s\n", CpuFeaturesString().c_str(), CpuKernelSetString().c_str());
}

double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// After a GEMM large enough for OpenBLAS to use its worker threads, the idle process burns no CPU: the
// workers sleep (OPENBLAS_THREAD_TIMEOUT, cpu_blas.h) instead of spinning on sched_yield for ~0.1 s. With
// the library's default the 200 ms below cost ~100 ms of CPU per worker; the bound allows for the
// bookkeeping of a loaded machine. This measures CPU consumed, not elapsed time.
TEST(CpuBlasTest, IdleWorkersSleepInsteadOfSpinning) {
  const BlasInfo& b = Blas();
  if (b.user_thread_timeout) GTEST_SKIP() << "OPENBLAS_THREAD_TIMEOUT was set by the user";
  const int n = 512;
  std::vector<float> a(n * n, 0.5f), bm(n * n, 0.25f), c(n * n, 0.0f);
  for (int rep = 0; rep < 3; ++rep) {
    Sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, bm.data(), n, 0.0f, c.data(), n);
  }
  EXPECT_FLOAT_EQ(c[0], 0.5f * 0.25f * n);
  const double before = ProcessCpuSeconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const double idle_cpu = ProcessCpuSeconds() - before;
  EXPECT_LT(idle_cpu, 0.04) << "the BLAS's idle workers used " << idle_cpu << " s of CPU in 0.2 s";
}

// The BLAS runs the core type the features call for (unless the user set OPENBLAS_CORETYPE), and its
// sgemm is the one Sgemm calls.
TEST(CpuBlasTest, LoadsTheCoreTypeOfTheFeatures) {
  const BlasInfo& b = Blas();
  EXPECT_EQ(b.core_wanted, ChooseKernelSet(ProbeCpu()).blas_core);
  if (!b.user_core) {
    // Tessera set the variable before loading the library.
    EXPECT_STREQ(std::getenv("OPENBLAS_CORETYPE"), b.core_wanted.c_str());
    EXPECT_FALSE(b.degraded) << "OpenBLAS runs " << b.core << ", wanted " << b.core_wanted;
    EXPECT_EQ(CpuKernelSetString().find("DEGRADED"), std::string::npos) << CpuKernelSetString();
  } else if (b.degraded) {  // e.g. OPENBLAS_CORETYPE=Prescott in the environment: said loudly
    EXPECT_NE(CpuKernelSetString().find("DEGRADED: wanted " + b.core_wanted), std::string::npos)
        << CpuKernelSetString();
  }
  if (!b.user_thread_timeout) {
    EXPECT_STREQ(std::getenv("OPENBLAS_THREAD_TIMEOUT"), "4");
    EXPECT_NE(CpuKernelSetString().find("blas_thread_timeout=4"), std::string::npos) << CpuKernelSetString();
  }
  // The BLAS is single-threaded; the pool splits its products (cpu_blas.h).
  EXPECT_STREQ(std::getenv("OPENBLAS_NUM_THREADS"), "1");
  EXPECT_EQ(b.threads, 1);
  // c = a b^T for a [2,3], b [2,3].
  const std::vector<float> a = {1, 2, 3, 4, 5, 6}, bm = {1, 0, -1, 2, 1, 0};
  std::vector<float> c(4, -7.0f);
  Sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 2, 2, 3, 1.0f, a.data(), 3, bm.data(), 3, 0.0f, c.data(), 2);
  EXPECT_EQ(c, (std::vector<float>{-2, 4, -2, 13}));
}

}  // namespace
}  // namespace tessera::cpu
