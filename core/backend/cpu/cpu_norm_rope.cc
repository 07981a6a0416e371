// CPU RMSNorm (forward/backward) and rotary position embedding.
//
// RMSNorm, per row n of x [N,D]:
//   r = 1 / sqrt(mean(x^2) + eps),  out = x * r * w
//   dx_j = r * w_j * g_j - (r^3 / D) * x_j * sum_i(g_i * w_i * x_i)      (g = dout)
//   dweight_j += sum_n g[n,j] * x[n,j] * r[n]
// The sums of squares are float with a vectorized (multi-lane) reduction: well conditioned (all terms
// positive) and accurate to ~1e-6 relative for the row widths we use. out/dx may alias x or dout (each
// row is fully read before it is written). dweight is reduced over rows in a second pass parallel over
// column blocks, so it has no races and no per-thread buffers.
//
// RoPE (HF rotate_half), x [N,H,hd] in place, positions [N]: for i < half = hd/2,
//   a = pos * theta^(-2i/hd);  (x_i, x_{i+half}) <- (x_i c - x_{i+half} s, x_{i+half} c + x_i s)
// with c = cos(a), s = sin(a) (s negated when inverse). Angles are computed in double and rounded to
// float once, so large positions keep their precision.
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/backend/cpu/cpu_backend_internal.h"
#include "core/backend/cpu/cpu_check.h"
#include "core/backend/cpu/cpu_kernels.h"
#include "core/util/parallel.h"
#include "core/util/status_macros.h"

namespace tessera::cpu {

absl::Status CpuBackend::RmsNormForward(const Tensor& x, const Tensor& weight, float eps, Tensor& out,
                                        Tensor* rstd) {
  constexpr char kOp[] = "RmsNormForward";
  RETURN_IF_ERROR(CheckF32(kOp, "x", x));
  RETURN_IF_ERROR(CheckF32(kOp, "weight", weight));
  RETURN_IF_ERROR(CheckF32(kOp, "out", out));
  RETURN_IF_ERROR(CheckMatrix(kOp, "x", x, -1, -1));
  const int64_t n = Rows(x), d = Cols(x);
  RETURN_IF_ERROR(CheckShape(kOp, "weight", weight, {d}));
  RETURN_IF_ERROR(CheckMatrix(kOp, "out", out, n, d));
  if (rstd != nullptr) {
    RETURN_IF_ERROR(CheckF32(kOp, "rstd", *rstd));
    RETURN_IF_ERROR(CheckNumel(kOp, "rstd", *rstd, n));
  }
  if (!(eps >= 0.0f)) return absl::InvalidArgumentError(absl::StrCat(kOp, ": eps = ", eps, " must be >= 0"));
  const float* px = x.data<float>();
  const float* pw = weight.data<float>();
  float* po = out.data<float>();
  float* pr = rstd ? rstd->data<float>() : nullptr;
  ParallelFor(n, GrainFor(d), [&](int64_t s, int64_t e) {
    for (int64_t row = s; row < e; ++row) {
      const float* xr = px + row * d;
      float* orow = po + row * d;
      const float r = 1.0f / std::sqrt(SumSq(xr, d) / static_cast<float>(d) + eps);
      for (int64_t j = 0; j < d; ++j) orow[j] = xr[j] * r * pw[j];
      if (pr) pr[row] = r;
    }
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::RmsNormBackward(const Tensor& x, const Tensor& weight, const Tensor& rstd,
                                         const Tensor& dout, Tensor& dx, Tensor* dweight) {
  constexpr char kOp[] = "RmsNormBackward";
  RETURN_IF_ERROR(CheckF32(kOp, "x", x));
  RETURN_IF_ERROR(CheckF32(kOp, "weight", weight));
  RETURN_IF_ERROR(CheckF32(kOp, "rstd", rstd));
  RETURN_IF_ERROR(CheckF32(kOp, "dout", dout));
  RETURN_IF_ERROR(CheckF32(kOp, "dx", dx));
  RETURN_IF_ERROR(CheckMatrix(kOp, "x", x, -1, -1));
  const int64_t n = Rows(x), d = Cols(x);
  RETURN_IF_ERROR(CheckShape(kOp, "weight", weight, {d}));
  RETURN_IF_ERROR(CheckNumel(kOp, "rstd", rstd, n));
  RETURN_IF_ERROR(CheckMatrix(kOp, "dout", dout, n, d));
  RETURN_IF_ERROR(CheckMatrix(kOp, "dx", dx, n, d));
  if (dweight != nullptr) {
    RETURN_IF_ERROR(CheckF32(kOp, "dweight", *dweight));
    RETURN_IF_ERROR(CheckShape(kOp, "dweight", *dweight, {d}));
    if (Overlaps(*dweight, dx)) return absl::InvalidArgumentError("RmsNormBackward: dweight overlaps dx");
  }
  const float* px = x.data<float>();
  const float* pw = weight.data<float>();
  const float* pr = rstd.data<float>();
  const float* pg = dout.data<float>();
  float* pdx = dx.data<float>();
  // dweight first: dx may alias x or dout.
  if (dweight != nullptr) {
    constexpr int64_t kBlock = 64;
    float* pdw = dweight->data<float>();
    const int64_t blocks = (d + kBlock - 1) / kBlock;
    ParallelFor(blocks, 1, [&](int64_t bb, int64_t be) {
      const int64_t c0 = bb * kBlock, c1 = std::min(d, be * kBlock);
      std::vector<float> acc(c1 - c0, 0.0f);
      float* __restrict a = acc.data();
      for (int64_t row = 0; row < n; ++row) {
        const float* __restrict xr = px + row * d + c0;
        const float* __restrict gr = pg + row * d + c0;
        const float r = pr[row];
        for (int64_t j = 0; j < c1 - c0; ++j) a[j] += gr[j] * xr[j] * r;
      }
      for (int64_t j = 0; j < c1 - c0; ++j) pdw[c0 + j] += a[j];
    });
  }
  ParallelFor(n, GrainFor(2 * d), [&](int64_t s, int64_t e) {
    for (int64_t row = s; row < e; ++row) {
      const float* xr = px + row * d;
      const float* gr = pg + row * d;
      float* dxr = pdx + row * d;
      const float r = pr[row];
      float gwx = 0.0f;
#pragma omp simd reduction(+ : gwx)
      for (int64_t j = 0; j < d; ++j) gwx += gr[j] * pw[j] * xr[j];
      const float c = r * r * r * gwx / static_cast<float>(d);
      for (int64_t j = 0; j < d; ++j) dxr[j] = r * pw[j] * gr[j] - c * xr[j];
    }
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::Rope(Tensor& x, const Tensor& positions, float theta, bool inverse) {
  constexpr char kOp[] = "Rope";
  RETURN_IF_ERROR(CheckF32(kOp, "x", x));
  RETURN_IF_ERROR(CheckI32(kOp, "positions", positions));
  if (x.rank() != 3) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": x has shape ", ShapeString(x.shape()),
                                                   ", expected rank 3 [N,H,head_dim]"));
  }
  const int64_t n = x.dim(0), h = x.dim(1), hd = x.dim(2);
  if (hd % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": x has odd head_dim ", hd));
  }
  RETURN_IF_ERROR(CheckNumel(kOp, "positions", positions, n));
  if (!(theta > 0.0f)) return absl::InvalidArgumentError(absl::StrCat(kOp, ": theta = ", theta, " must be > 0"));
  const int64_t half = hd / 2;
  std::vector<double> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) {
    inv_freq[i] = std::pow(static_cast<double>(theta), -2.0 * static_cast<double>(i) / static_cast<double>(hd));
  }
  float* px = x.data<float>();
  const int32_t* pp = positions.data<int32_t>();
  const double sign = inverse ? -1.0 : 1.0;
  ParallelFor(n, GrainFor(h * hd + 8 * half), [&](int64_t s, int64_t e) {
    std::vector<float> cs(half), sn(half);
    for (int64_t t = s; t < e; ++t) {
      for (int64_t i = 0; i < half; ++i) {
        const double a = static_cast<double>(pp[t]) * inv_freq[i];
        cs[i] = static_cast<float>(std::cos(a));
        sn[i] = static_cast<float>(sign * std::sin(a));
      }
      for (int64_t head = 0; head < h; ++head) {
        float* __restrict lo = px + (t * h + head) * hd;
        float* __restrict hi = lo + half;
        for (int64_t i = 0; i < half; ++i) {
          const float a = lo[i], b = hi[i];
          lo[i] = a * cs[i] - b * sn[i];
          hi[i] = b * cs[i] + a * sn[i];
        }
      }
    }
  });
  return absl::OkStatus();
}

}  // namespace tessera::cpu
