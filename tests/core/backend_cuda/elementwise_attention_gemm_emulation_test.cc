// The element-wise, row-wise attention and grouped GEMM kernels (core/backend/cuda/
// cuda_elementwise_kernels.cuh, cuda_attention_kernels.cuh, cuda_grouped_gemm_kernels.cuh), their own source
// run on the host through emulation/ (lanes as threads, a scalar WMMA), each with the block size and grid
// shape of its launcher, against the CPU backend's op on the same inputs:
//  - ElementwiseEmulation: Fill (f32, bf16, i32), Convert (f32 <-> bf16), CopyMany (three copies with
//    conversions in one launch), Add (mixed dtypes, in place), Axpy, Scale, SumSquares, SwiGLU forward and
//    backward, AdamW (steps 1-3 with weight decay, f32 and bf16 parameters, bf16 gradients), AdamWMany
//    (three entries in one launch, one with a bf16 narrow copy);
//  - RowwiseAttentionEmulation: forward (out, lse) and backward (dq, and dk/dv accumulating into a cache
//    gradient two sequences share) for three sequences (a prefill, a prefill continuing a cache prefix, a
//    decode step), GQA, idle query rows, head_dim 40 (f32, no lse) and 64 (bf16 inputs);
//  - GroupedGemmEmulation: the SIMT body (f32) and the WMMA body (bf16 inputs, f32 or bf16 output) on
//    forward, input-grad and weight-grad problem tables built as cuda_matmul.cc builds them, for ragged
//    groups (5, 70 and 100 rows, an empty group, rows outside every group; K not a multiple of a K step).
// Grids: the launchers' (element-wise: GridFor(n, 256) blocks, 2-4 here; attention: (rows, heads); GEMM:
// one block per 64x64 tile); Fill also runs once on 1 block, which its grid-stride loop allows. Sizes
// are small because the emulation starts a host thread per CUDA thread.
// core_backend_cuda_test checks the compiled kernels on a GPU.
//
// Tolerances. Exact (bit-equal) where the kernel and the CPU do the same float operations in the same
// order: Fill, Convert, CopyMany, Add, Scale, Axpy with alpha a power of two (alpha * x exact, so the
// kernel's fmaf equals the CPU's multiply-add), AdamW's m and v. Otherwise:
//  - SwiGLU: the CPU's AVX2 loop takes exp from a polynomial (cpu_swiglu_rows.h), the kernel from expf:
//    |d| <= 2^-20 (1 + |want|), plus one bf16 ulp (2^-7 |want|) for a bf16 output (bit-equal on a CPU
//    without AVX2, where the CPU also calls expf);
//  - Axpy with alpha = 0.3: fmaf vs a rounded product then a sum: |d| <= 2^-22 (|alpha x| + |y|);
//  - SumSquares: fp64 sums in another order: relative 1e-13;
//  - AdamW parameters: the kernel divides by the bias corrections, the CPU multiplies by their inverses:
//    |d| <= 2^-21 max(1, |want|) (f32: 4 ulps in [1, 2)), one bf16 ulp (2^-7 |want|) for a bf16 parameter;
//  - attention: online softmax split over 4 warps and atomically accumulated dk/dv against the CPU's
//    two-pass / blocked kernels, fp32 throughout: |d| <= 1e-6 (1 + |want|) (out, lse, dq), 2e-6 (1 + |want|)
//    (dk, dv, which hold the accumulated-onto values ~1);
//  - grouped GEMM: fp32 sums in another order than OpenBLAS's (inputs bf16-representable, so products
//    are exact): |d| <= 5e-6 for f32 C (|C| up to ~10), plus one bf16 ulp (2^-7 |want|) for bf16 C.
// (Observed on x86-64: at most ~1/10 of each of these, 1/2 for Axpy and 1/4 for AdamW.)
#include "tests/core/backend_cuda/emulation/cuda_emulation.h"  // first: the kernels' CUDA built-ins

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <vector>


#include "core/backend/backend.h"
#include "core/backend/cuda/cuda_attention_kernels.cuh"
#include "core/backend/cuda/cuda_elementwise_kernels.cuh"
#include "core/backend/cuda/cuda_grouped_gemm_kernels.cuh"
#include "core/backend/cuda/cuda_grouped_problems.h"
#include "gtest/gtest.h"
#include "tests/core/backend_cuda/emulation/emulation_test_util.h"

namespace tessera::testing {
namespace {

namespace ew = cuda_kernels::elementwise;
namespace at = cuda_kernels::attention;
namespace gg = cuda_kernels::grouped_gemm;
using cuda_kernels::AttnSeqDesc;
using cuda_kernels::CopyDesc;
using cuda_kernels::GemmProblem;

// ---- Host stand-ins for device buffers -----------------------------------------------------------------

// A buffer of one dtype (f32, bf16 or i32) in host memory, as a kernel or CopyFromHost reads it.
struct HostArray {
  DType dt = DType::kF32;
  std::vector<unsigned char> bytes;

  HostArray(DType d, const std::vector<float>& v) : dt(d), bytes(v.size() * DTypeSize(d)) {
    for (size_t i = 0; i < v.size(); ++i) Set(i, v[i]);
  }
  int64_t size() const { return static_cast<int64_t>(bytes.size() / DTypeSize(dt)); }
  void* data() { return bytes.data(); }
  const void* data() const { return bytes.data(); }
  int idt() const { return static_cast<int>(dt); }
  void Set(size_t i, float x) {
    switch (dt) {
      case DType::kBF16: {
        const __nv_bfloat16 b = __float2bfloat16_rn(x);
        std::memcpy(bytes.data() + 2 * i, &b, 2);
        break;
      }
      case DType::kI32: {
        const int32_t v = static_cast<int32_t>(x);
        std::memcpy(bytes.data() + 4 * i, &v, 4);
        break;
      }
      default: std::memcpy(bytes.data() + 4 * i, &x, 4); break;
    }
  }
  float Get(size_t i) const {
    switch (dt) {
      case DType::kBF16: {
        __nv_bfloat16 b;
        std::memcpy(&b, bytes.data() + 2 * i, 2);
        return __bfloat162float(b);
      }
      case DType::kI32: {
        int32_t v;
        std::memcpy(&v, bytes.data() + 4 * i, 4);
        return static_cast<float>(v);
      }
      default: {
        float f;
        std::memcpy(&f, bytes.data() + 4 * i, 4);
        return f;
      }
    }
  }
  std::vector<float> Floats() const {
    std::vector<float> r(size());
    for (size_t i = 0; i < r.size(); ++i) r[i] = Get(i);
    return r;
  }
};

const char* Name(DType dt) { return DTypeName(dt); }

Tensor Upload(Backend& be, const HostArray& h, std::vector<int64_t> shape) {
  auto t = be.Alloc(std::move(shape), h.dt);
  EXPECT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(be.CopyFromHost(h.data(), h.bytes.size(), *t).ok());
  return *t;
}
Tensor Upload(Backend& be, const HostArray& h) { return Upload(be, h, {h.size()}); }

HostArray Download(Backend& be, const Tensor& t) {
  HostArray h(t.dtype(), std::vector<float>(t.numel()));
  EXPECT_TRUE(be.CopyToHost(t, h.data(), h.bytes.size()).ok());
  return h;
}

std::vector<float> Random(size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Values exactly representable in bf16 (so f32 and bf16 buffers hold the same numbers).
std::vector<float> RandomBf16(size_t n, std::mt19937& rng, float lo, float hi) {
  return cuda_emulation::RandomBf16Exact(n, rng, lo, hi);
}

// Bit-equal element by element (same dtype), elements [begin, end) (end < 0: all).
void ExpectSame(const HostArray& got, const HostArray& want, const std::string& what, int64_t begin = 0,
                int64_t end = -1) {
  ASSERT_EQ(got.dt, want.dt) << what;
  if (end < 0) {
    ASSERT_EQ(got.size(), want.size()) << what;
    end = want.size();
  }
  const size_t es = DTypeSize(want.dt);
  for (int64_t i = begin; i < end; ++i) {
    ASSERT_EQ(std::memcmp(got.bytes.data() + i * es, want.bytes.data() + i * es, es), 0)
        << what << " [" << i << "]: got " << got.Get(i) << ", want " << want.Get(i);
  }
}

// |got - want| <= tol(i, want) for every element.
void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, const std::string& what,
                const std::function<double(size_t, float)>& tol) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << what << " [" << i << "]: " << got[i];
    ASSERT_LE(std::fabs(double(got[i]) - want[i]), tol(i, want[i]))
        << what << " [" << i << "]: got " << got[i] << ", want " << want[i];
  }
}

// SwiGLU's tolerance (see the file comment): 2^-20 (1 + |want|), plus one bf16 ulp for bf16.
void ExpectSwiGluNear(const HostArray& got, const HostArray& want, const std::string& what) {
  ASSERT_EQ(got.dt, want.dt) << what;
  ASSERT_EQ(got.size(), want.size()) << what;
  const bool bf16 = want.dt == DType::kBF16;
  for (int64_t i = 0; i < want.size(); ++i) {
    const double w = want.Get(i), tol = std::ldexp(1.0, -20) * (1.0 + std::fabs(w)) +
                                        (bf16 ? std::ldexp(std::fabs(w), -7) : 0.0);
    ASSERT_LE(std::fabs(got.Get(i) - w), tol) << what << " [" << i << "]: got " << got.Get(i) << ", want " << w;
  }
}

std::unique_ptr<Backend> Cpu() {
  auto cpu = MakeBackend("cpu");
  EXPECT_TRUE(cpu.ok()) << cpu.status();
  return std::move(*cpu);
}

// ---- Element-wise ------------------------------------------------------------------------------------

// The launchers' grid, GridFor(n, kThreads) blocks of kThreads, or at most max_blocks of them (the
// kernels are grid-stride loops, so fewer blocks cover n too).
void Launch1D(int64_t n, const std::function<void()>& body, unsigned max_blocks = 1u << 30) {
  const unsigned blocks = std::min(cuda_kernels::GridFor(n, ew::kThreads), max_blocks);
  cuda_emulation::Launch(dim3(blocks), ew::kThreads, body);
}

TEST(ElementwiseEmulation, FillMatchesCpuBackend) {
  auto be = Cpu();
  const int64_t n = 300;  // 2 blocks, the second partial
  struct Case {
    DType dt;
    float value;
  };
  for (const Case& c : {Case{DType::kF32, -2.7f}, Case{DType::kBF16, -2.7f}, Case{DType::kI32, -3.9f},
                        Case{DType::kI32, 7.5f}}) {
    SCOPED_TRACE(std::string(Name(c.dt)) + " " + std::to_string(c.value));
    Tensor t = Upload(*be, HostArray(c.dt, std::vector<float>(n, 99.0f)));
    ASSERT_TRUE(be->Fill(t, c.value).ok());
    const HostArray want = Download(*be, t);
    // The launcher's 2 blocks; for f32 also one block striding twice.
    for (unsigned max_blocks : {1u << 30, 1u}) {
      if (max_blocks == 1 && c.dt != DType::kF32) continue;
      HostArray x(c.dt, std::vector<float>(n, 99.0f));
      Launch1D(n, [&] { ew::FillKernel(x.data(), x.idt(), n, c.value, c.dt == DType::kI32); }, max_blocks);
      ExpectSame(x, want, "fill");
    }
  }
}

// Values that exercise bf16 rounding: random ones, ties (to even, both ways), carries into the exponent,
// tiny and large magnitudes, signed zeros.
std::vector<float> ConversionValues(int64_t n, std::mt19937& rng) {
  std::vector<float> v = Random(n, rng, -3, 3);
  const float special[] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -(1.0f + 0x1p-8f), 1.9990234f, 0x1.fffffep+127f,
                           1e-40f,         -0.0f,              0.0f,              65504.0f,   -1e-30f};
  for (size_t i = 0; i < std::size(special); ++i) v[7 * i + 3] = special[i];
  return v;
}

TEST(ElementwiseEmulation, ConvertAndCopyManyMatchCpuBackend) {
  auto be = Cpu();
  std::mt19937 rng(1);
  const int64_t n = 450;
  const std::vector<float> values = ConversionValues(n, rng);
  for (auto [dts, dtd] : {std::pair{DType::kF32, DType::kBF16}, std::pair{DType::kBF16, DType::kF32}}) {
    SCOPED_TRACE(std::string("convert ") + Name(dts) + " -> " + Name(dtd));
    const HostArray src(dts, values);
    Tensor ts = Upload(*be, src), td = Upload(*be, HostArray(dtd, std::vector<float>(n, 0.0f)));
    ASSERT_TRUE(be->Copy(ts, td).ok());
    HostArray dst(dtd, std::vector<float>(n, 99.0f));
    Launch1D(n, [&] { ew::ConvertKernel(src.data(), src.idt(), dst.data(), dst.idt(), n); });
    ExpectSame(dst, Download(*be, td), "convert");
  }

  // CopyMany: three copies of different lengths and conversions, one launch of (x blocks, 3 copies) as the
  // launcher sizes it (x = GridFor(max_n), at most 64). Each host destination has 8 extra elements that
  // must stay untouched.
  struct Copy {
    DType dts, dtd;
    int64_t n;
  };
  const std::vector<Copy> copies = {{DType::kF32, DType::kF32, 300}, {DType::kBF16, DType::kF32, 5},
                                    {DType::kF32, DType::kBF16, 450}};
  std::vector<HostArray> srcs, dsts;
  std::vector<Tensor> tsrc, tdst;
  int64_t max_n = 0;
  for (const Copy& c : copies) {
    srcs.emplace_back(c.dts, std::vector<float>(values.begin(), values.begin() + c.n));
    dsts.emplace_back(c.dtd, std::vector<float>(c.n + 8, 99.0f));
    tsrc.push_back(Upload(*be, srcs.back()));
    tdst.push_back(Upload(*be, HostArray(c.dtd, std::vector<float>(c.n, 0.0f))));
    max_n = std::max(max_n, c.n);
  }
  std::vector<CopyPair> pairs;
  std::vector<CopyDesc> desc;
  for (size_t i = 0; i < copies.size(); ++i) {
    pairs.push_back({&tsrc[i], &tdst[i]});
    desc.push_back({srcs[i].data(), dsts[i].data(), copies[i].n, srcs[i].idt(), dsts[i].idt()});
  }
  ASSERT_TRUE(be->CopyMany(pairs).ok());
  const unsigned x = std::min(cuda_kernels::GridFor(max_n, ew::kThreads), 64u);
  cuda_emulation::Launch(dim3(x, static_cast<unsigned>(desc.size())), ew::kThreads,
                         [&] { ew::CopyManyKernel(desc.data()); });
  for (size_t i = 0; i < copies.size(); ++i) {
    const std::string what = "copy " + std::to_string(i);
    ExpectSame(dsts[i], Download(*be, tdst[i]), what, 0, copies[i].n);
    for (int64_t j = copies[i].n; j < copies[i].n + 8; ++j) ASSERT_EQ(dsts[i].Get(j), 99.0f) << what << " overran";
  }
}

TEST(ElementwiseEmulation, AddAxpyScaleMatchCpuBackend) {
  auto be = Cpu();
  std::mt19937 rng(2);
  const int64_t n = 500;
  const std::vector<float> va = Random(n, rng, -4, 4), vb = Random(n, rng, -4, 4);

  struct Add {
    DType a, b, out;
    bool in_place;  // out is a
  };
  for (const Add& c : {Add{DType::kF32, DType::kBF16, DType::kBF16, false},
                       Add{DType::kBF16, DType::kBF16, DType::kF32, false},
                       Add{DType::kF32, DType::kF32, DType::kF32, true}}) {
    SCOPED_TRACE(std::string("add ") + Name(c.a) + " + " + Name(c.b) + " -> " + Name(c.out) +
                 (c.in_place ? " in place" : ""));
    HostArray a(c.a, va), b(c.b, vb), out(c.out, std::vector<float>(n, 99.0f));
    Tensor ta = Upload(*be, a), tb = Upload(*be, b), tout = Upload(*be, out);
    ASSERT_TRUE(be->Add(ta, tb, c.in_place ? ta : tout).ok());
    HostArray* o = c.in_place ? &a : &out;
    Launch1D(n, [&] { ew::AddKernel(a.data(), a.idt(), b.data(), b.idt(), o->data(), o->idt(), n); });
    ExpectSame(*o, Download(*be, c.in_place ? ta : tout), "add");
  }

  struct Axpy {
    float alpha;
    DType x, y;
  };
  for (const Axpy& c : {Axpy{-0.5f, DType::kBF16, DType::kF32}, Axpy{2.0f, DType::kF32, DType::kBF16},
                        Axpy{0.3f, DType::kF32, DType::kF32}}) {
    SCOPED_TRACE("axpy " + std::to_string(c.alpha) + " " + Name(c.x) + " -> " + Name(c.y));
    const HostArray x(c.x, va);
    HostArray y(c.y, vb);
    Tensor tx = Upload(*be, x), ty = Upload(*be, y);
    ASSERT_TRUE(be->Axpy(c.alpha, tx, ty).ok());
    Launch1D(n, [&] { ew::AxpyKernel(c.alpha, x.data(), x.idt(), y.data(), y.idt(), n); });
    const HostArray want = Download(*be, ty);
    if (c.alpha == 0.3f) {  // fmaf vs multiply-then-add: see the top comment
      ExpectNear(y.Floats(), want.Floats(), "axpy",
                 [&](size_t i, float) { return 0x1p-22 * (std::fabs(c.alpha * x.Get(i)) + std::fabs(vb[i])); });
    } else {
      ExpectSame(y, want, "axpy");
    }
  }

  for (DType dt : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(std::string("scale ") + Name(dt));
    HostArray x(dt, va);
    Tensor tx = Upload(*be, x);
    ASSERT_TRUE(be->Scale(tx, 0.37f).ok());
    Launch1D(n, [&] { ew::ScaleKernel(x.data(), x.idt(), n, 0.37f); });
    ExpectSame(x, Download(*be, tx), "scale");
  }
}

TEST(ElementwiseEmulation, SumSquaresMatchesCpuBackend) {
  auto be = Cpu();
  std::mt19937 rng(3);
  for (auto [dt, n] : {std::pair{DType::kF32, int64_t{1000}}, std::pair{DType::kBF16, int64_t{400}}}) {
    SCOPED_TRACE(Name(dt));
    const HostArray x(dt, Random(n, rng, -3, 3));
    auto want = be->SumSquares(Upload(*be, x));
    ASSERT_TRUE(want.ok()) << want.status();
    double acc = 0.0;  // the launcher's caller zeroes it
    Launch1D(n, [&] { ew::SumSquaresKernel(x.data(), x.idt(), n, &acc); });
    EXPECT_NEAR(acc, *want, 1e-13 * *want);
  }
}

TEST(ElementwiseEmulation, SwiGluMatchesCpuBackend) {
  auto be = Cpu();
  std::mt19937 rng(4);
  const int64_t n = 480;
  const std::vector<float> vg = Random(n, rng, -6, 6), vu = Random(n, rng, -2, 2), vd = Random(n, rng, -1, 1);
  for (DType dt : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(std::string("forward ") + Name(dt));
    const HostArray g(dt, vg), u(dt, vu);
    HostArray out(dt, std::vector<float>(n, 99.0f));
    Tensor tout = Upload(*be, out);
    ASSERT_TRUE(be->SwiGluForward(Upload(*be, g), Upload(*be, u), tout).ok());
    Launch1D(n, [&] { ew::SwiGluForwardKernel(g.data(), g.idt(), u.data(), u.idt(), out.data(), out.idt(), n); });
    ExpectSwiGluNear(out, Download(*be, tout), "out");
  }
  struct Bwd {
    DType g, u, d, dg, du;
  };
  for (const Bwd& c : {Bwd{DType::kF32, DType::kF32, DType::kF32, DType::kF32, DType::kF32},
                       Bwd{DType::kBF16, DType::kBF16, DType::kF32, DType::kBF16, DType::kF32}}) {
    SCOPED_TRACE(std::string("backward, gate ") + Name(c.g) + ", dgate " + Name(c.dg));
    const HostArray g(c.g, vg), u(c.u, vu), d(c.d, vd);
    HostArray dg(c.dg, std::vector<float>(n, 99.0f)), du(c.du, std::vector<float>(n, 99.0f));
    Tensor tdg = Upload(*be, dg), tdu = Upload(*be, du);
    ASSERT_TRUE(be->SwiGluBackward(Upload(*be, g), Upload(*be, u), Upload(*be, d), tdg, tdu).ok());
    Launch1D(n, [&] {
      ew::SwiGluBackwardKernel(g.data(), g.idt(), u.data(), u.idt(), d.data(), d.idt(), dg.data(), dg.idt(),
                               du.data(), du.idt(), n);
    });
    ExpectSwiGluNear(dg, Download(*be, tdg), "dgate");
    ExpectSwiGluNear(du, Download(*be, tdu), "dup");
  }
}

TEST(ElementwiseEmulation, AdamWMatchesCpuBackend) {
  auto be = Cpu();
  const int64_t n = 500;
  for (DType pdt : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(std::string("param ") + Name(pdt));
    std::mt19937 rng(5);
    HostArray param(pdt, Random(n, rng, -1.5f, 1.5f));
    HostArray m(DType::kF32, std::vector<float>(n, 0.0f)), v(DType::kF32, std::vector<float>(n, 0.0f));
    Tensor tp = Upload(*be, param), tm = Upload(*be, m), tv = Upload(*be, v);
    AdamWParams p;
    p.lr = 1e-2f;
    p.weight_decay = 0.1f;
    for (p.step = 1; p.step <= (pdt == DType::kF32 ? 3 : 2); ++p.step) {
      SCOPED_TRACE("step " + std::to_string(p.step));
      const HostArray grad(DType::kBF16, Random(n, rng, -1, 1));
      ASSERT_TRUE(be->AdamW(tp, Upload(*be, grad), tm, tv, p).ok());
      // As CudaBackend::AdamW: bias corrections in double, passed as float.
      const double bc1 = 1.0 - std::pow(double{p.beta1}, double(p.step));
      const double bc2 = 1.0 - std::pow(double{p.beta2}, double(p.step));
      Launch1D(n, [&] {
        ew::AdamWKernel(param.data(), param.idt(), grad.data(), grad.idt(), static_cast<float*>(m.data()),
                        static_cast<float*>(v.data()), n, p.lr, p.beta1, p.beta2, p.eps, p.weight_decay,
                        static_cast<float>(bc1), static_cast<float>(bc2));
      });
      ExpectSame(m, Download(*be, tm), "m");
      ExpectSame(v, Download(*be, tv), "v");
      ExpectNear(param.Floats(), Download(*be, tp).Floats(), "param", [&](size_t, float want) {
        return pdt == DType::kF32 ? 0x1p-21 * std::max(1.0f, std::fabs(want)) : 0x1p-7 * std::fabs(want);
      });
    }
  }
}

// AdamWMany: three entries in one launch (an f32 master with a bf16 narrow copy, a bf16 parameter, an f32
// parameter; each its own weight decay), against the CPU backend's AdamWMany (AdamW then Copy per entry).
// Launched with the launcher's grid and with one block per entry (the grid-stride loop must cover n).
// The narrow copy must be the bf16 rounding of the kernel's own new parameter, bit for bit; each host
// buffer has 8 guard elements that must stay untouched.
TEST(ElementwiseEmulation, AdamWManyMatchesCpuBackend) {
  struct Entry {
    DType pdt, gdt;
    int64_t n;
    float wd;
    bool narrow;
  };
  const std::vector<Entry> entries = {{DType::kF32, DType::kF32, 300, 0.1f, true},
                                      {DType::kBF16, DType::kBF16, 5, 0.0f, false},
                                      {DType::kF32, DType::kF32, 450, 0.05f, false}};
  const int count = static_cast<int>(entries.size());
  int64_t max_n = 0;
  for (const Entry& e : entries) max_n = std::max(max_n, e.n);
  const unsigned launcher_x = std::min(cuda_kernels::GridFor(max_n, ew::kThreads),
                                       static_cast<unsigned>(std::max(1, 4096 / count)));
  for (unsigned x : {launcher_x, 1u}) {
    SCOPED_TRACE("blocks per entry " + std::to_string(x));
    auto be = Cpu();
    std::mt19937 rng(7);
    auto guarded = [](DType dt, std::vector<float> v) {
      v.resize(v.size() + 8, 99.0f);
      return HostArray(dt, v);
    };
    std::vector<HostArray> param, m, v, narrow;
    std::vector<Tensor> tp, tm, tv, tn;
    for (const Entry& e : entries) {
      const std::vector<float> p0 = Random(e.n, rng, -1.5f, 1.5f), zeros(e.n, 0.0f);
      param.push_back(guarded(e.pdt, p0));
      m.push_back(guarded(DType::kF32, zeros));
      v.push_back(guarded(DType::kF32, zeros));
      narrow.push_back(guarded(DType::kBF16, zeros));
      tp.push_back(Upload(*be, HostArray(e.pdt, p0)));
      tm.push_back(Upload(*be, HostArray(DType::kF32, zeros)));
      tv.push_back(Upload(*be, HostArray(DType::kF32, zeros)));
      tn.push_back(Upload(*be, HostArray(DType::kBF16, zeros)));
    }
    AdamWParams p;
    p.lr = 1e-2f;
    p.weight_decay = 123.0f;  // ignored: each entry has its own
    for (p.step = 1; p.step <= 2; ++p.step) {
      SCOPED_TRACE("step " + std::to_string(p.step));
      std::vector<HostArray> grad;
      std::vector<Tensor> tg;
      std::vector<AdamWTensor> batch;
      std::vector<cuda_kernels::AdamWDesc> desc;
      for (int i = 0; i < count; ++i) {
        const Entry& e = entries[i];
        grad.emplace_back(e.gdt, Random(e.n, rng, -1, 1));
        tg.push_back(Upload(*be, grad.back()));
      }
      for (int i = 0; i < count; ++i) {
        const Entry& e = entries[i];
        batch.push_back({&tp[i], &tg[i], &tm[i], &tv[i], e.narrow ? &tn[i] : nullptr, e.wd});
        desc.push_back({param[i].data(), grad[i].data(), static_cast<float*>(m[i].data()),
                        static_cast<float*>(v[i].data()), e.narrow ? narrow[i].data() : nullptr, e.n, e.wd,
                        param[i].idt(), grad[i].idt(), narrow[i].idt()});
      }
      ASSERT_TRUE(be->AdamWMany(batch, p).ok());
      // As CudaBackend::AdamWMany: bias corrections in double, passed as float.
      const float bc1 = static_cast<float>(1.0 - std::pow(double{p.beta1}, double(p.step)));
      const float bc2 = static_cast<float>(1.0 - std::pow(double{p.beta2}, double(p.step)));
      cuda_emulation::Launch(dim3(x, static_cast<unsigned>(count)), ew::kThreads, [&] {
        ew::AdamWManyKernel(desc.data(), p.lr, p.beta1, p.beta2, p.eps, bc1, bc2);
      });
      for (int i = 0; i < count; ++i) {
        const Entry& e = entries[i];
        const std::string what = "entry " + std::to_string(i);
        ExpectSame(m[i], Download(*be, tm[i]), what + " m", 0, e.n);
        ExpectSame(v[i], Download(*be, tv[i]), what + " v", 0, e.n);
        std::vector<float> got = param[i].Floats();
        got.resize(e.n);
        ExpectNear(got, Download(*be, tp[i]).Floats(), what + " param", [&](size_t, float want) {
          return e.pdt == DType::kF32 ? 0x1p-21 * std::max(1.0f, std::fabs(want)) : 0x1p-7 * std::fabs(want);
        });
        for (int64_t j = 0; j < e.n; ++j) {
          const float want_narrow = e.narrow ? HostArray(DType::kBF16, {got[j]}).Get(0) : 0.0f;
          ASSERT_EQ(narrow[i].Get(j), want_narrow) << what << " narrow [" << j << "]";
        }
        for (const HostArray* h : {&param[i], &m[i], &v[i], &narrow[i]}) {
          for (int64_t j = e.n; j < e.n + 8; ++j) ASSERT_EQ(h->Get(j), 99.0f) << what << " overran";
        }
      }
    }
  }
}

// ---- Row-wise attention -------------------------------------------------------------------------------

struct SeqSpec {
  int64_t q_begin, q_len, kv_len;
  int store;  // which K/V (and dK/dV) buffer
  int64_t window = 0;
};

// Three sequences over 8 query rows: a 3-token prefill (rows 0-2), row 3 idle, a 2-token prefill after
// a 7-token cache prefix (rows 4-5), a decode step at position 11 (row 6) that shares the second
// sequence's cache and cache gradient, row 7 idle. The caches are longer than any kv_len, so a kernel
// that reads one key too many reads a valid (and wrong) row. with_lse: the forward writes lse (else it
// gets null, as in inference; the backward reads the CPU's either way). window > 0: every sequence has
// that sliding window (AttentionSeq::window), so rows past it skip their oldest keys.
void CheckRowwiseAttention(int head_dim, int heads, int kvh, DType in_dt, bool with_lse, int64_t window = 0) {
  SCOPED_TRACE("head_dim " + std::to_string(head_dim) + ", heads " + std::to_string(heads) + "/" +
               std::to_string(kvh) + ", inputs " + Name(in_dt) + (with_lse ? "" : ", no lse") + ", window " +
               std::to_string(window));
  const int D = head_dim;
  const int64_t nq = 8;
  const std::vector<int64_t> store_rows = {5, 14};
  const std::vector<SeqSpec> seqs = {{0, 3, 3, 0, window}, {4, 2, 9, 1, window}, {6, 1, 12, 1, window}};
  const std::vector<int64_t> idle = {3, 7};
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::mt19937 rng(17 + D);
  const HostArray q(in_dt, RandomBf16(nq * heads * D, rng, -2, 2));
  const HostArray dout(in_dt, RandomBf16(nq * heads * D, rng, -1, 1));
  std::vector<HostArray> k, v, dk0, dv0;
  for (int64_t rows : store_rows) {
    k.emplace_back(in_dt, RandomBf16(rows * kvh * D, rng, -2, 2));
    v.emplace_back(in_dt, RandomBf16(rows * kvh * D, rng, -1, 1));
    dk0.emplace_back(DType::kF32, Random(rows * kvh * D, rng, -1, 1));  // gradients accumulate onto these
    dv0.emplace_back(DType::kF32, Random(rows * kvh * D, rng, -1, 1));
  }

  // Reference: the CPU backend.
  auto be = Cpu();
  Tensor tq = Upload(*be, q, {nq, heads, D}), tdout = Upload(*be, dout, {nq, heads, D});
  std::vector<Tensor> tk, tv, tdk, tdv;
  for (size_t s = 0; s < store_rows.size(); ++s) {
    const std::vector<int64_t> shape = {store_rows[s], kvh, D};
    tk.push_back(Upload(*be, k[s], shape));
    tv.push_back(Upload(*be, v[s], shape));
    tdk.push_back(Upload(*be, dk0[s], shape));
    tdv.push_back(Upload(*be, dv0[s], shape));
  }
  std::vector<AttentionSeq> ref_seqs;
  for (const SeqSpec& s : seqs) {
    ref_seqs.push_back({s.q_begin, s.q_len, s.kv_len, &tk[s.store], &tv[s.store], &tdk[s.store], &tdv[s.store],
                        s.window});
  }
  Tensor ref_out = *be->Zeros({nq, heads, D}), ref_lse = *be->Zeros({nq, heads});
  Tensor ref_dq = *be->Zeros({nq, heads, D});
  ASSERT_TRUE(be->AttentionForward(tq, ref_seqs, scale, ref_out, &ref_lse).ok());
  ASSERT_TRUE(be->AttentionBackward(tq, ref_seqs, scale, ref_out, ref_lse, tdout, ref_dq).ok());
  const std::vector<float> cpu_out = Download(*be, ref_out).Floats(), cpu_lse = Download(*be, ref_lse).Floats();

  // The kernels on host memory, with the sequence table and row -> sequence map PrepareAttention builds
  // (dk/dv null in the forward's table).
  std::vector<HostArray> dk = dk0, dv = dv0;
  std::vector<AttnSeqDesc> fwd_descs, bwd_descs;
  std::vector<int32_t> row_seq(nq, -1);
  for (size_t i = 0; i < seqs.size(); ++i) {
    const SeqSpec& s = seqs[i];
    for (int64_t r = s.q_begin; r < s.q_begin + s.q_len; ++r) row_seq[r] = static_cast<int32_t>(i);
    fwd_descs.push_back({s.q_begin, s.q_len, s.kv_len, k[s.store].data(), v[s.store].data(), nullptr, nullptr,
                         s.window});
    bwd_descs.push_back({s.q_begin, s.q_len, s.kv_len, k[s.store].data(), v[s.store].data(), dk[s.store].data(),
                         dv[s.store].data(), s.window});
  }
  const float kSentinel = 1234.5f;
  HostArray out(DType::kF32, std::vector<float>(nq * heads * D, kSentinel));
  HostArray lse(DType::kF32, std::vector<float>(nq * heads, kSentinel));
  HostArray dq(DType::kF32, std::vector<float>(nq * heads * D, kSentinel));
  const dim3 grid(static_cast<unsigned>(nq), static_cast<unsigned>(heads));  // as the launchers
  cuda_emulation::Launch(grid, at::kWarps * 32, [&] {
    at::AttentionForwardKernel(q.data(), q.idt(), fwd_descs.data(), row_seq.data(), k[0].idt(), heads, kvh, D,
                               scale, out.data(), out.idt(), with_lse ? static_cast<float*>(lse.data()) : nullptr);
  });
  // The backward reads the CPU's out/lse, so it is compared on its own.
  const HostArray cpu_out_arr(DType::kF32, cpu_out);
  cuda_emulation::Launch(grid, at::kWarps * 32, [&] {
    at::AttentionBackwardKernel(q.data(), q.idt(), bwd_descs.data(), row_seq.data(), k[0].idt(), dk[0].idt(), heads,
                                kvh, D, scale, cpu_out_arr.data(), cpu_out_arr.idt(), cpu_lse.data(), dout.data(),
                                dout.idt(), dq.data(), dq.idt());
  });

  auto is_idle = [&](int64_t row) { return std::find(idle.begin(), idle.end(), row) != idle.end(); };
  auto rows = [&](const std::vector<float>& x, int64_t width, bool want_idle) {
    std::vector<float> sel;
    for (int64_t i = 0; i < nq; ++i) {
      if (is_idle(i) == want_idle) sel.insert(sel.end(), x.begin() + i * width, x.begin() + (i + 1) * width);
    }
    return sel;
  };
  auto tight = [](size_t, float want) { return 1e-6 * (1.0 + std::fabs(want)); };
  const int64_t row_width = heads * D;
  ExpectNear(rows(out.Floats(), row_width, false), rows(cpu_out, row_width, false), "out", tight);
  if (with_lse) {
    ExpectNear(rows(lse.Floats(), heads, false), rows(cpu_lse, heads, false), "lse", tight);
  } else {
    for (float x : lse.Floats()) ASSERT_EQ(x, kSentinel) << "lse written through a null pointer";
  }
  ExpectNear(rows(dq.Floats(), row_width, false), rows(Download(*be, ref_dq).Floats(), row_width, false), "dq", tight);
  for (float x : rows(out.Floats(), row_width, true)) ASSERT_EQ(x, kSentinel) << "out of an idle row was written";
  for (float x : rows(lse.Floats(), heads, true)) ASSERT_EQ(x, kSentinel) << "lse of an idle row was written";
  for (float x : rows(dq.Floats(), row_width, true)) ASSERT_EQ(x, 0.0f) << "dq of an idle row is not zero";
  for (size_t s = 0; s < store_rows.size(); ++s) {
    const std::string tag = " of store " + std::to_string(s);
    auto grad_tol = [](size_t, float want) { return 2e-6 * (1.0 + std::fabs(want)); };
    ExpectNear(dk[s].Floats(), Download(*be, tdk[s]).Floats(), "dk" + tag, grad_tol);
    ExpectNear(dv[s].Floats(), Download(*be, tdv[s]).Floats(), "dv" + tag, grad_tol);
  }
}

// head_dim 40: the second value of each lane is masked for lanes 8-31. 2 heads / 2 KV heads, then 4 / 2 (GQA).
TEST(RowwiseAttentionEmulation, F32HeadDim40MatchesCpuBackend) { CheckRowwiseAttention(40, 2, 2, DType::kF32, false); }
TEST(RowwiseAttentionEmulation, Bf16HeadDim64GqaMatchesCpuBackend) {
  CheckRowwiseAttention(64, 4, 2, DType::kBF16, true);
}
// Sliding windows of 3 (every sequence runs past it: the decode at position 11 sees keys 9-11) and 1.
TEST(RowwiseAttentionEmulation, SlidingWindowMatchesCpuBackend) {
  CheckRowwiseAttention(64, 4, 2, DType::kBF16, true, 3);
  CheckRowwiseAttention(40, 2, 2, DType::kF32, true, 1);
}

// ---- Grouped GEMM -------------------------------------------------------------------------------------

using Mode = cuda_kernels::GroupedMode;

const char* ModeName(Mode m) {
  return m == Mode::kForward ? "forward" : m == Mode::kInputGrad ? "input grad" : "weight grad";
}

struct Group {
  int64_t row_begin, rows;
};

// The problem table of one grouped call, built by the backend's own code (cuda_grouped_problems.h, as
// CudaBackend::RunGrouped does), optionally cut into `chunk_rows`-row chunks as GroupedGemmImpl::
// kCublasChunks does (here every chunk goes to the kernel). lhs: x (forward) or dy; out: y or dx;
// wgrads: the weight gradients. Returns the tile count.
int64_t BuildProblems(Mode mode, const std::vector<Group>& groups, int64_t w_out, int64_t w_in, HostArray& lhs,
                      std::vector<HostArray>& weights, HostArray* x_for_wgrad, HostArray* out,
                      std::vector<HostArray>* wgrads, int64_t chunk_rows, std::vector<GemmProblem>& probs) {
  std::vector<cuda_kernels::GroupedOperand> operands;
  for (size_t i = 0; i < groups.size(); ++i) {
    operands.push_back({groups[i].row_begin, groups[i].rows, weights[i].data(), (*wgrads)[i].data()});
  }
  cuda_kernels::GroupedActivations act;
  act.lhs = lhs.data();
  act.lhs_size = DTypeSize(lhs.dt);
  if (mode == Mode::kWeightGrad) {
    act.x = x_for_wgrad->data();
    act.x_size = DTypeSize(x_for_wgrad->dt);
  } else {
    act.out = out->data();
    act.out_size = DTypeSize(out->dt);
  }
  probs = cuda_kernels::GroupedProblems(mode, act, w_out, w_in, operands);
  if (chunk_rows > 0) {
    const size_t c_size = mode == Mode::kWeightGrad ? DTypeSize((*wgrads)[0].dt) : DTypeSize(out->dt);
    cuda_kernels::RowChunks chunks = cuda_kernels::SplitIntoRowChunks(probs, chunk_rows, DTypeSize(lhs.dt), c_size);
    EXPECT_EQ(chunks.full.empty(), mode == Mode::kWeightGrad) << "the test's groups must make full chunks";
    for (const GemmProblem& p : chunks.full) EXPECT_EQ(p.m, chunk_rows);
    probs = chunks.full;
    probs.insert(probs.end(), chunks.rest.begin(), chunks.rest.end());
  }
  return cuda_kernels::AssignGroupedTiles(probs);
}

// GroupedGemm's dispatch: the WMMA body for bf16 A and B, the SIMT body otherwise.
void LaunchGroupedGemm(const std::vector<GemmProblem>& probs, int64_t tiles, DType dta, DType dtb, DType dtc) {
  const int np = static_cast<int>(probs.size());
  if (dta == DType::kBF16 && dtb == DType::kBF16) {
    cuda_emulation::Launch(dim3(static_cast<unsigned>(tiles)), gg::kWmmaThreads,
                           [&] { gg::GroupedGemmWmmaKernel(probs.data(), np, static_cast<int>(dtc)); });
  } else {
    cuda_emulation::Launch(dim3(static_cast<unsigned>(tiles)), gg::kSimtThreads, [&] {
      gg::GroupedGemmSimtKernel(probs.data(), np, static_cast<int>(dta), static_cast<int>(dtb),
                                static_cast<int>(dtc));
    });
  }
}

// x [N, 48], 4 groups: rows [3, 73) (two tile rows), an empty group, [73, 78) (5 rows), [80, 180) (two
// tile rows); rows 0-2 and 78-79 are in no group. Weights [72, 48]: two tile columns forward (the second
// partial), K = 48 / 72 / group rows, none a multiple of the WMMA body's 32-wide K step.
void CheckGroupedGemm(Mode mode, DType dt_ab, DType dt_c, int64_t chunk_rows = 0) {
  SCOPED_TRACE(std::string(ModeName(mode)) + ", A/B " + Name(dt_ab) + ", C " + Name(dt_c) +
               (chunk_rows > 0 ? ", " + std::to_string(chunk_rows) + "-row chunks" : ""));
  const int64_t n_rows = 180, w_in = 48, w_out = 72;
  const std::vector<Group> groups = {{3, 70}, {73, 0}, {73, 5}, {80, 100}};
  std::mt19937 rng(23 + static_cast<int>(mode));
  const int64_t lhs_width = mode == Mode::kForward ? w_in : w_out;
  HostArray lhs(dt_ab, RandomBf16(n_rows * lhs_width, rng, -1, 1));
  HostArray x(dt_ab, RandomBf16(n_rows * w_in, rng, -1, 1));  // weight grad's x
  std::vector<HostArray> weights, wgrads;
  for (size_t g = 0; g < groups.size(); ++g) {
    weights.emplace_back(dt_ab, RandomBf16(w_out * w_in, rng, -1, 1));
    wgrads.emplace_back(dt_c, RandomBf16(w_out * w_in, rng, -1, 1));  // accumulated onto
  }
  const float kSentinel = 77.0f;  // rows outside every group keep it
  const int64_t out_width = mode == Mode::kForward ? w_out : w_in;
  HostArray out(dt_c, std::vector<float>(n_rows * out_width, kSentinel));

  // Reference.
  auto be = Cpu();
  Tensor tlhs = Upload(*be, lhs, {n_rows, lhs_width}), tx = Upload(*be, x, {n_rows, w_in});
  Tensor tout = Upload(*be, out, {n_rows, out_width});
  std::vector<Tensor> tw, tdw;
  for (size_t g = 0; g < groups.size(); ++g) {
    tw.push_back(Upload(*be, weights[g], {w_out, w_in}));
    tdw.push_back(Upload(*be, wgrads[g], {w_out, w_in}));
  }
  std::vector<GemmGroup> gg_groups;
  for (size_t g = 0; g < groups.size(); ++g) {
    gg_groups.push_back({groups[g].row_begin, groups[g].rows, &tw[g], &tdw[g]});
  }
  switch (mode) {
    case Mode::kForward: ASSERT_TRUE(be->GroupedMatmul(tlhs, gg_groups, tout).ok()); break;
    case Mode::kInputGrad: ASSERT_TRUE(be->GroupedMatmulInputGrad(tlhs, gg_groups, tout).ok()); break;
    case Mode::kWeightGrad: ASSERT_TRUE(be->GroupedMatmulWeightGrad(tx, tlhs, gg_groups).ok()); break;
  }

  std::vector<GemmProblem> probs;
  const int64_t tiles = BuildProblems(mode, groups, w_out, w_in, lhs, weights, &x, &out, &wgrads, chunk_rows, probs);
  if (mode == Mode::kForward && chunk_rows == 0) {
    // A problem with no tiles between two others (cuda_matmul.cc drops empty groups, but the kernel's
    // problem search promises to skip such problems): no block may pick it.
    GemmProblem empty = probs[1];
    empty.m = 0;
    empty.c = nullptr;
    probs.insert(probs.begin() + 1, empty);
  }
  LaunchGroupedGemm(probs, tiles, dt_ab, mode == Mode::kWeightGrad ? x.dt : dt_ab, dt_c);

  auto tol = [&](size_t, float want) { return 5e-6 + (dt_c == DType::kBF16 ? 0x1p-7 * std::fabs(want) : 0.0); };
  if (mode == Mode::kWeightGrad) {
    for (size_t g = 0; g < groups.size(); ++g) {
      ExpectNear(wgrads[g].Floats(), Download(*be, tdw[g]).Floats(), "dW of group " + std::to_string(g), tol);
    }
    return;
  }
  const std::vector<float> got = out.Floats(), want = Download(*be, tout).Floats();
  ExpectNear(got, want, mode == Mode::kForward ? "y" : "dx", tol);
  for (int64_t r : {0, 1, 2, 78, 79}) {
    for (int64_t c = 0; c < out_width; ++c) ASSERT_EQ(got[r * out_width + c], kSentinel) << "row " << r << " written";
  }
}

TEST(GroupedGemmEmulation, SimtF32MatchesCpuBackend) {
  for (Mode mode : {Mode::kForward, Mode::kInputGrad, Mode::kWeightGrad}) {
    CheckGroupedGemm(mode, DType::kF32, DType::kF32);
  }
}

// bf16 C: the weight gradient (beta = 1 reads the bf16 C; the store rounds once).
TEST(GroupedGemmEmulation, WmmaBf16MatchesCpuBackend) {
  for (Mode mode : {Mode::kForward, Mode::kInputGrad, Mode::kWeightGrad}) {
    CheckGroupedGemm(mode, DType::kBF16, DType::kF32);
  }
  CheckGroupedGemm(Mode::kWeightGrad, DType::kBF16, DType::kBF16);
}

// The kCublasChunks schedule's tables (full 32-row chunks, then remainders; weight grads stay whole) give
// the same results: its pointer arithmetic is checked here, the cuBLAS calls on a GPU.
TEST(GroupedGemmEmulation, RowChunkTablesMatchCpuBackend) {
  for (Mode mode : {Mode::kForward, Mode::kInputGrad, Mode::kWeightGrad}) {
    CheckGroupedGemm(mode, DType::kF32, DType::kF32, 32);
    CheckGroupedGemm(mode, DType::kBF16, DType::kBF16, 32);
  }
}

}  // namespace
}  // namespace tessera::testing
