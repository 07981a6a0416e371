// CPU feature probe and kernel choice (see cpu_features.h). Bit positions: Intel SDM vol. 2A, CPUID;
// XCR0 layout: SDM vol. 1, 13.3.
#include "core/backend/cpu/cpu_features.h"

#include <cpuid.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace tessera::cpu {
namespace {

constexpr bool Bit(uint64_t v, int b) { return ((v >> b) & 1u) != 0; }

// XCR0 state components.
constexpr uint64_t kXcr0Avx = (1u << 1) | (1u << 2);                // XMM, YMM
constexpr uint64_t kXcr0Avx512 = kXcr0Avx | (1u << 5) | (1u << 6) | (1u << 7);  // + opmask, ZMM_Hi256, Hi16_ZMM
constexpr uint64_t kXcr0Amx = (1u << 17) | (1u << 18);              // XTILECFG, XTILEDATA

uint64_t ReadXcr0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

CpuidRaw ReadCpuid() {
  CpuidRaw r;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return r;
  r.max_leaf = a;
  r.vendor[0] = b;
  r.vendor[1] = d;
  r.vendor[2] = c;
  if (r.max_leaf >= 1) {
    __cpuid_count(1, 0, a, b, c, d);
    r.leaf1_eax = a;
    r.leaf1_ecx = c;
    r.leaf1_edx = d;
    if (Bit(r.leaf1_ecx, 27)) r.xcr0 = ReadXcr0();  // xgetbv faults unless OSXSAVE
  }
  if (r.max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    r.leaf7_ebx = b;
    r.leaf7_ecx = c;
    r.leaf7_edx = d;
    if (a >= 1) {  // leaf 7's max subleaf
      __cpuid_count(7, 1, a, b, c, d);
      r.leaf7_1_eax = a;
    }
  }
  if (__get_cpuid_max(0x80000000u, nullptr) >= 0x80000004u) {
    uint32_t words[12];
    for (unsigned i = 0; i < 3; ++i) {
      __cpuid(0x80000002u + i, words[4 * i], words[4 * i + 1], words[4 * i + 2], words[4 * i + 3]);
    }
    std::memcpy(r.brand, words, 48);
    r.brand[48] = '\0';
  }
  return r;
}

}  // namespace

CpuFeatures ParseCpuid(const CpuidRaw& r) {
  CpuFeatures f;
  char vendor[13] = {};
  std::memcpy(vendor, r.vendor, 12);
  f.vendor = vendor;
  // The brand string is space-padded on some CPUs (left, on older Intel parts).
  std::string brand(r.brand, strnlen(r.brand, 48));
  const size_t first = brand.find_first_not_of(' ');
  const size_t last = brand.find_last_not_of(' ');
  f.brand = first == std::string::npos ? "" : brand.substr(first, last - first + 1);
  const uint32_t base_family = (r.leaf1_eax >> 8) & 0xf;
  const uint32_t base_model = (r.leaf1_eax >> 4) & 0xf;
  f.family = static_cast<int>(base_family == 0xf ? base_family + ((r.leaf1_eax >> 20) & 0xff) : base_family);
  f.model = static_cast<int>(base_family == 0x6 || base_family == 0xf ? base_model | (((r.leaf1_eax >> 16) & 0xf) << 4)
                                                                      : base_model);
  if (r.max_leaf < 1) return f;
  f.sse3 = Bit(r.leaf1_ecx, 0);
  const bool osxsave = Bit(r.leaf1_ecx, 27);
  const bool os_avx = osxsave && (r.xcr0 & kXcr0Avx) == kXcr0Avx;
  const bool os_avx512 = osxsave && (r.xcr0 & kXcr0Avx512) == kXcr0Avx512;
  const bool os_amx = osxsave && (r.xcr0 & kXcr0Amx) == kXcr0Amx;
  f.avx = os_avx && Bit(r.leaf1_ecx, 28);
  f.fma = f.avx && Bit(r.leaf1_ecx, 12);
  f.f16c = f.avx && Bit(r.leaf1_ecx, 29);
  if (r.max_leaf < 7) return f;
  f.avx2 = f.avx && Bit(r.leaf7_ebx, 5);
  f.avx512f = os_avx512 && Bit(r.leaf7_ebx, 16);
  f.avx512dq = f.avx512f && Bit(r.leaf7_ebx, 17);
  f.avx512cd = f.avx512f && Bit(r.leaf7_ebx, 28);
  f.avx512bw = f.avx512f && Bit(r.leaf7_ebx, 30);
  f.avx512vl = f.avx512f && Bit(r.leaf7_ebx, 31);
  f.avx512_vnni = f.avx512f && Bit(r.leaf7_ecx, 11);
  f.avx512_fp16 = f.avx512f && Bit(r.leaf7_edx, 23);
  f.avx512_bf16 = f.avx512f && Bit(r.leaf7_1_eax, 5);
  f.amx_bf16 = os_amx && Bit(r.leaf7_edx, 22);
  f.amx_tile = os_amx && Bit(r.leaf7_edx, 24);
  f.amx_int8 = os_amx && Bit(r.leaf7_edx, 25);
  return f;
}

const CpuFeatures& ProbeCpu() {
  static const CpuFeatures f = ParseCpuid(ReadCpuid());
  return f;
}

std::string FeatureString(const CpuFeatures& f) {
  std::string s = absl::StrCat(f.vendor, " family ", f.family, " model ", f.model, " '", f.brand, "':");
  const std::pair<bool, const char*> flags[] = {
      {f.sse3, "sse3"},           {f.avx, "avx"},           {f.avx2, "avx2"},
      {f.fma, "fma"},             {f.f16c, "f16c"},         {f.avx512f, "avx512f"},
      {f.avx512dq, "avx512dq"},   {f.avx512cd, "avx512cd"}, {f.avx512bw, "avx512bw"},
      {f.avx512vl, "avx512vl"},   {f.avx512_vnni, "avx512_vnni"}, {f.avx512_bf16, "avx512_bf16"},
      {f.avx512_fp16, "avx512_fp16"}, {f.amx_tile, "amx_tile"}, {f.amx_bf16, "amx_bf16"},
      {f.amx_int8, "amx_int8"}};
  for (const auto& [on, name] : flags) {
    if (on) absl::StrAppend(&s, " ", name);
  }
  return s;
}

KernelSet ChooseKernelSet(const CpuFeatures& f) {
  KernelSet k;
  if (f.HasAvx512Core()) {
    k.blas_core = f.avx512_bf16 ? "Cooperlake" : "SkylakeX";
  } else if (f.HasAvx2Fma()) {
    k.blas_core = "Haswell";
  } else if (f.avx) {
    k.blas_core = "Sandybridge";
  } else {
    k.blas_core = "Prescott";
  }
  // The f32 direct kernels use AVX-512F (+FMA) or AVX2+FMA.
  if (f.avx512f && f.fma) k.small_gemm = SmallGemmIsa::kAvx512;
  else if (f.HasAvx2Fma()) k.small_gemm = SmallGemmIsa::kAvx2;
  // bf16 weights: vdpbf16ps where the CPU has it (AVX512_BF16; every AMX CPU has it too), else widening
  // bf16 -> f32 in registers (a shift) before the FMAs.
  const bool avx512_fbwvl = f.avx512f && f.avx512bw && f.avx512vl && f.fma;
  if (avx512_fbwvl && f.avx512_bf16) k.bf16_gemm = Bf16GemmIsa::kAvx512Bf16;
  else if (avx512_fbwvl) k.bf16_gemm = Bf16GemmIsa::kAvx512;
  else if (f.HasAvx2Fma()) k.bf16_gemm = Bf16GemmIsa::kAvx2;
  return k;
}

const char* IsaName(SmallGemmIsa isa) {
  switch (isa) {
    case SmallGemmIsa::kAvx512: return "avx512";
    case SmallGemmIsa::kAvx2: return "avx2";
    case SmallGemmIsa::kPortable: break;
  }
  return "portable";
}

const char* IsaName(Bf16GemmIsa isa) {
  switch (isa) {
    case Bf16GemmIsa::kAvx512Bf16: return "avx512_bf16";
    case Bf16GemmIsa::kAvx512: return "avx512";
    case Bf16GemmIsa::kAvx2: return "avx2";
    case Bf16GemmIsa::kPortable: break;
  }
  return "portable";
}

}  // namespace tessera::cpu
