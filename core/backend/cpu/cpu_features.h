// CPU feature probe and the CPU backend's kernel choice.
//
// Contract: the kernels are chosen from what the CPU reports it can execute (cpuid feature bits) and what
// the OS saves on a context switch (XCR0 via xgetbv), never from a table of CPU models, so a CPU newer
// than every library's table still gets the widest kernels it supports (issue 17: OpenBLAS 0.3.21 took an
// AVX-512 Xeon of model 207 for "Prescott", SSE3 only, and ran 4x slower without a word).
//
//   ParseCpuid(raw)      pure: raw cpuid/xgetbv registers -> CpuFeatures (unit-tested on recorded values)
//   ProbeCpu()           runs cpuid/xgetbv on this CPU (once) and parses it
//   ChooseKernelSet(f)   pure: features -> the kernel set (BLAS core type, small-GEMM ISA, bf16 kernel)
//
// A feature counts only when the OS enables its register state: AVX/AVX2/FMA need XCR0 bits 1-2 (XMM,
// YMM), AVX-512 additionally bits 5-7 (opmask, ZMM_Hi256, Hi16_ZMM), AMX bits 17-18 (XTILECFG/XTILEDATA).
#pragma once

#include <cstdint>
#include <string>

namespace tessera::cpu {

// The registers ParseCpuid reads; zero where the leaf does not exist (max_leaf says which do).
struct CpuidRaw {
  uint32_t max_leaf = 0;                      // leaf 0 eax
  uint32_t vendor[3] = {0, 0, 0};             // leaf 0 ebx, edx, ecx (the vendor string's order)
  uint32_t leaf1_eax = 0, leaf1_ecx = 0, leaf1_edx = 0;
  uint32_t leaf7_ebx = 0, leaf7_ecx = 0, leaf7_edx = 0;  // leaf 7 subleaf 0
  uint32_t leaf7_1_eax = 0;                   // leaf 7 subleaf 1
  uint64_t xcr0 = 0;                          // xgetbv(0); only read when OSXSAVE (leaf 1 ecx bit 27) is set
  char brand[49] = {};                        // leaves 0x80000002-4, NUL-terminated ("" if absent)
};

struct CpuFeatures {
  std::string vendor;  // "GenuineIntel", "AuthenticAMD", ...
  std::string brand;   // e.g. "Intel(R) Xeon(R) Processor"
  int family = 0, model = 0;  // display family/model (extended fields folded in)
  bool sse3 = false, avx = false, avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512dq = false, avx512cd = false, avx512bw = false, avx512vl = false;
  bool avx512_vnni = false, avx512_bf16 = false, avx512_fp16 = false;
  bool amx_tile = false, amx_bf16 = false, amx_int8 = false;
  // The ISA groups the kernels need (all parts present and OS-enabled).
  bool HasAvx2Fma() const { return avx2 && fma; }
  bool HasAvx512Core() const { return avx512f && avx512dq && avx512cd && avx512bw && avx512vl; }
};

CpuFeatures ParseCpuid(const CpuidRaw& raw);
// This CPU's features (probed once, thread-safe).
const CpuFeatures& ProbeCpu();
// "family 6 model 167 'Intel(R) Xeon(R) Processor': avx2 fma avx512f ... amx_bf16"
std::string FeatureString(const CpuFeatures& f);

// ISA of the f32 direct small-M kernels (cpu_small_gemm.h). Ordered: a CPU supporting one supports the
// ones before it.
enum class SmallGemmIsa { kPortable, kAvx2, kAvx512 };
// Kernels of the bf16-weight GEMV/small-M path (cpu_bf16_gemm.h). Ordered likewise.
enum class Bf16GemmIsa { kPortable, kAvx2, kAvx512, kAvx512Bf16 };

struct KernelSet {
  // OPENBLAS_CORETYPE for Debian's DYNAMIC_ARCH OpenBLAS, from the features: "Cooperlake" (AVX-512 +
  // AVX512_BF16: SkylakeX's sgemm plus bf16 sbgemm), "SkylakeX" (AVX-512 F/DQ/CD/BW/VL), "Haswell"
  // (AVX2+FMA), "Sandybridge" (AVX), "Prescott" (otherwise).
  std::string blas_core;
  SmallGemmIsa small_gemm = SmallGemmIsa::kPortable;
  Bf16GemmIsa bf16_gemm = Bf16GemmIsa::kPortable;
};
KernelSet ChooseKernelSet(const CpuFeatures& f);
const char* IsaName(SmallGemmIsa isa);
const char* IsaName(Bf16GemmIsa isa);

}  // namespace tessera::cpu
