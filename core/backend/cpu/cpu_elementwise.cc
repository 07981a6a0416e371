// CPU element-wise ops: Add, Axpy, Scale, SumSquares, SwiGLU forward/backward.
//
// Math:
//   Add:  out = a + b            (out may alias a or b: each element is read before it is written)
//   Axpy: y += alpha * x         Scale: x *= alpha
//   SumSquares: sum x^2, in double over fixed 8192-element blocks summed in block order, so the
//     result does not depend on the thread count.
//   SwiGLU: s = sigmoid(g), out = g * s * u;
//     dgate = dout * u * s * (1 + g * (1 - s)),  dup = dout * g * s  (the element loops and their
//     AVX2 variant: cpu_swiglu_rows.h).
// Memory: all tensors f32 with equal numel (shapes may differ; they are read flat). Loops are flat,
// contiguous and split by ParallelFor.
#include <cmath>
#include <vector>

#include "core/backend/cpu/cpu_backend_internal.h"
#include "core/backend/cpu/cpu_check.h"
#include "core/backend/cpu/cpu_small_gemm.h"
#include "core/backend/cpu/cpu_swiglu_rows.h"
#include "core/util/parallel.h"
#include "core/util/status_macros.h"

namespace tessera::cpu {
namespace {

constexpr int64_t kGrain = 1 << 15;

// sum x^2 in double over n contiguous floats (a free function: the omp simd reduction over a lambda's
// captured pointer stayed scalar).
double SumSquaresF64(const float* __restrict x, int64_t n) {
  double acc = 0.0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(x[i]) * x[i];
  return acc;
}

}  // namespace

absl::Status CpuBackend::Add(const Tensor& a, const Tensor& b, Tensor& out) {
  RETURN_IF_ERROR(CheckF32("Add", "a", a));
  RETURN_IF_ERROR(CheckF32("Add", "b", b));
  RETURN_IF_ERROR(CheckF32("Add", "out", out));
  RETURN_IF_ERROR(CheckNumel("Add", "b", b, a.numel()));
  RETURN_IF_ERROR(CheckNumel("Add", "out", out, a.numel()));
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  float* po = out.data<float>();
  ParallelFor(a.numel(), kGrain, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) po[i] = pa[i] + pb[i];
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::Axpy(float alpha, const Tensor& x, Tensor& y) {
  RETURN_IF_ERROR(CheckF32("Axpy", "x", x));
  RETURN_IF_ERROR(CheckF32("Axpy", "y", y));
  RETURN_IF_ERROR(CheckNumel("Axpy", "y", y, x.numel()));
  const float* px = x.data<float>();
  float* py = y.data<float>();
  ParallelFor(x.numel(), kGrain, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) py[i] += alpha * px[i];
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::Scale(Tensor& x, float alpha) {
  RETURN_IF_ERROR(CheckF32("Scale", "x", x));
  float* px = x.data<float>();
  ParallelFor(x.numel(), kGrain, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) px[i] *= alpha;
  });
  return absl::OkStatus();
}

absl::StatusOr<double> CpuBackend::SumSquares(const Tensor& x) {
  RETURN_IF_ERROR(CheckF32("SumSquares", "x", x));
  constexpr int64_t kBlock = 8192;
  const int64_t n = x.numel();
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(blocks, 0.0);
  const float* px = x.data<float>();
  ParallelFor(blocks, 4, [&](int64_t bs, int64_t be) {
    for (int64_t blk = bs; blk < be; ++blk) {
      const int64_t s = blk * kBlock, e = std::min(n, s + kBlock);
      partial[blk] = SumSquaresF64(px + s, e - s);
    }
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

absl::Status CpuBackend::SwiGluForward(const Tensor& gate, const Tensor& up, Tensor& out) {
  RETURN_IF_ERROR(CheckF32("SwiGluForward", "gate", gate));
  RETURN_IF_ERROR(CheckF32("SwiGluForward", "up", up));
  RETURN_IF_ERROR(CheckF32("SwiGluForward", "out", out));
  RETURN_IF_ERROR(CheckShape("SwiGluForward", "up", up, gate.shape()));
  RETURN_IF_ERROR(CheckNumel("SwiGluForward", "out", out, gate.numel()));
  const float* g = gate.data<float>();
  const float* u = up.data<float>();
  float* o = out.data<float>();
  const SmallGemmIsa isa = SmallGemmBestIsa();
  ParallelFor(gate.numel(), kGrain / 4, [&](int64_t s, int64_t e) { SwiGluRows(isa, g + s, u + s, o + s, e - s); });
  return absl::OkStatus();
}

absl::Status CpuBackend::SwiGluBackward(const Tensor& gate, const Tensor& up, const Tensor& dout,
                                        Tensor& dgate, Tensor& dup) {
  constexpr char kOp[] = "SwiGluBackward";
  RETURN_IF_ERROR(CheckF32(kOp, "gate", gate));
  RETURN_IF_ERROR(CheckF32(kOp, "up", up));
  RETURN_IF_ERROR(CheckF32(kOp, "dout", dout));
  RETURN_IF_ERROR(CheckF32(kOp, "dgate", dgate));
  RETURN_IF_ERROR(CheckF32(kOp, "dup", dup));
  RETURN_IF_ERROR(CheckShape(kOp, "up", up, gate.shape()));
  RETURN_IF_ERROR(CheckNumel(kOp, "dout", dout, gate.numel()));
  RETURN_IF_ERROR(CheckNumel(kOp, "dgate", dgate, gate.numel()));
  RETURN_IF_ERROR(CheckNumel(kOp, "dup", dup, gate.numel()));
  const float* g = gate.data<float>();
  const float* u = up.data<float>();
  const float* d = dout.data<float>();
  float* dg = dgate.data<float>();
  float* du = dup.data<float>();
  const SmallGemmIsa isa = SmallGemmBestIsa();
  ParallelFor(gate.numel(), kGrain / 4, [&](int64_t s, int64_t e) {
    SwiGluBackwardRows(isa, g + s, u + s, d + s, dg + s, du + s, e - s);
  });
  return absl::OkStatus();
}

}  // namespace tessera::cpu
