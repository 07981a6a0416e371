// Device code of the row-normalizing kernels (launchers and grid sizing: cuda_norm_vocab.cu). Kept in a
// header so tests/core/backend_cuda/rows_norm_vocab_emulation_test.cc can run these same kernel bodies on
// the host where no GPU is present.
//
// Row-normalizing kernels: RMSNorm (forward/backward), RoPE, log-softmax and cross-entropy.
//
// Math (backend.h has the contracts):
//   RMSNorm  y = x * r * w, r = (mean(x^2) + eps)^-1/2;
//            dx = r * (w . g) - x * r^3 * mean(x . w . g);   dw += sum_n g_n . x_n * r_n
//   RoPE     HF rotate_half; angles computed in fp64 (pos * theta^(-2i/D)) so long positions keep
//            fp32-level accuracy; inverse rotates by -angle.
//   Softmax  lse = m + log(sum exp(x - m)) with (m, s) combined online per thread, then across the block.
//   CE       loss = lse - x[t] (0 for t < 0); dlogits = dloss * (exp(x - lse) - onehot(t)).
// Memory contract: one block per row for the row ops (each row read once for statistics, once for the
// output); dw is a column reduction done by a second kernel over (column tile, row chunk) with one atomic
// add per column per chunk. RoPE is in place, one thread per rotated pair.
#pragma once

#include "core/backend/cuda/cuda_device_util.cuh"
#include "core/backend/cuda/cuda_kernels.h"

// An unnamed namespace: the .cu and the host emulation test each get their own copies (see
// cuda_attention_tiled_kernels.cuh).
namespace tessera::cuda_kernels::norm_vocab {
namespace {

__global__ void RmsNormForwardKernel(const void* x, int dtx, const void* w, int dtw, float eps, void* out, int dto,
                                     float* rstd, int64_t n, int64_t d) {
  __shared__ float scratch[32];
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const int64_t base = row * d;
    float ss = 0.0f;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      const float v = Ld(x, dtx, base + c);
      ss = fmaf(v, v, ss);
    }
    ss = BlockSum(ss, scratch);
    const float r = rsqrtf(ss / static_cast<float>(d) + eps);
    if (rstd != nullptr && threadIdx.x == 0) rstd[row] = r;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) St(out, dto, base + c, Ld(x, dtx, base + c) * r * Ld(w, dtw, c));
  }
}

__global__ void RmsNormBackwardDxKernel(const void* x, int dtx, const void* w, int dtw, const float* rstd,
                                        const void* dout, int dtdo, void* dx, int dtdx, int64_t n, int64_t d) {
  __shared__ float scratch[32];
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const int64_t base = row * d;
    const float r = rstd[row];
    float dot = 0.0f;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      dot = fmaf(Ld(x, dtx, base + c), Ld(w, dtw, c) * Ld(dout, dtdo, base + c), dot);
    }
    dot = BlockSum(dot, scratch);
    const float coef = r * r * r * dot / static_cast<float>(d);
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      const float g = Ld(dout, dtdo, base + c) * Ld(w, dtw, c);
      St(dx, dtdx, base + c, r * g - Ld(x, dtx, base + c) * coef);
    }
  }
}

constexpr int kDwRowsPerChunk = 64;

__global__ void RmsNormBackwardDwKernel(const void* x, int dtx, const float* rstd, const void* dout, int dtdo,
                                        void* dw, int dtdw, int64_t n, int64_t d) {
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (c >= d) return;
  for (int64_t chunk = blockIdx.y; chunk * kDwRowsPerChunk < n; chunk += gridDim.y) {
    const int64_t end = min(n, (chunk + 1) * kDwRowsPerChunk);
    float s = 0.0f;
    for (int64_t row = chunk * kDwRowsPerChunk; row < end; ++row) {
      s = fmaf(Ld(dout, dtdo, row * d + c), Ld(x, dtx, row * d + c) * rstd[row], s);
    }
    AtomicAddTo(dw, dtdw, c, s);
  }
}

__global__ void RopeKernel(void* x, int dt, const int32_t* pos, int64_t n, int64_t heads, int64_t head_dim,
                           double theta, bool inverse) {
  const int64_t half = head_dim / 2;
  const int64_t total = n * heads * half;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total; t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = t % half;
    const int64_t row = t / half;  // (token, head)
    const int64_t token = row / heads;
    const double inv_freq = pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
    double s, c;
    sincos(static_cast<double>(pos[token]) * inv_freq, &s, &c);
    if (inverse) s = -s;
    const int64_t base = row * head_dim;
    const float x1 = Ld(x, dt, base + i), x2 = Ld(x, dt, base + i + half);
    St(x, dt, base + i, static_cast<float>(x1 * c - x2 * s));
    St(x, dt, base + i + half, static_cast<float>(x2 * c + x1 * s));
  }
}

// Block-wide log-sum-exp of one row.
__device__ float RowLse(const void* logits, int dtl, int64_t base, int64_t v, float* scratch) {
  float m = -INFINITY, s = 0.0f;
  for (int64_t c = threadIdx.x; c < v; c += blockDim.x) {
    const float val = Ld(logits, dtl, base + c);
    if (val > m) {
      s = s * expf(m - val) + 1.0f;
      m = val;
    } else {
      s += expf(val - m);
    }
  }
  const float gm = BlockMax(m, scratch);
  const float part = m == -INFINITY ? 0.0f : s * expf(m - gm);
  const float total = BlockSum(part, scratch);
  return gm + logf(total);
}

__global__ void LogSoftmaxKernel(const void* logits, int dtl, void* out, int dto, int64_t n, int64_t v) {
  __shared__ float scratch[32];
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const int64_t base = row * v;
    const float lse = RowLse(logits, dtl, base, v, scratch);
    for (int64_t c = threadIdx.x; c < v; c += blockDim.x) St(out, dto, base + c, Ld(logits, dtl, base + c) - lse);
  }
}

__global__ void CrossEntropyForwardKernel(const void* logits, int dtl, const int32_t* targets, void* loss,
                                          int dtloss, float* lse_out, int64_t n, int64_t v, int* err) {
  __shared__ float scratch[32];
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const int64_t base = row * v;
    const float lse = RowLse(logits, dtl, base, v, scratch);
    if (threadIdx.x == 0) {
      if (lse_out != nullptr) lse_out[row] = lse;
      const int32_t t = targets[row];
      if (t >= v) {
        atomicOr(err, kErrTargetIndex);
        St(loss, dtloss, row, 0.0f);
      } else {
        St(loss, dtloss, row, t < 0 ? 0.0f : lse - Ld(logits, dtl, base + t));
      }
    }
  }
}

__global__ void CrossEntropyBackwardKernel(const void* logits, int dtl, const int32_t* targets, const float* lse,
                                           const void* dloss, int dtdl, void* dlogits, int dtd, int64_t n,
                                           int64_t v) {
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const int64_t base = row * v;
    const int32_t t = targets[row];
    const bool ignored = t < 0 || t >= v;
    const float g = ignored ? 0.0f : Ld(dloss, dtdl, row);
    const float l = lse[row];
    for (int64_t c = threadIdx.x; c < v; c += blockDim.x) {
      const float p = ignored ? 0.0f : expf(Ld(logits, dtl, base + c) - l);
      St(dlogits, dtd, base + c, g * (p - (c == t ? 1.0f : 0.0f)));
    }
  }
}

}  // namespace
}  // namespace tessera::cuda_kernels::norm_vocab
