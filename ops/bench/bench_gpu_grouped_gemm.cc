// GPU benchmark: the grouped expert GEMM (both implementations: cublasGemmGroupedBatchedEx and our own
// kernel) against one dense cuBLAS GEMM of the same FLOPs, on a Qwen3-MoE-sized expert layer
// (hidden 2048, expert width 768, 64 experts, top-8), bf16 storage with fp32 accumulation.
//
// For each routing (uniform, skewed) and each op (forward of the gate/up and down projections, input
// grad, weight grad) it times the grouped call and the dense Matmul with the same total FLOPs, and prints
//   grouped op=<op> routing=<r> impl=<cublas|kernel|chunks> ms=<median> tflops=<x> dense_tflops=<x> ratio=<x>
// (chunks: GroupedGemmImpl::kCublasChunks, full row chunks through cublasGemmBatchedEx; it counts for
// grouped_vs_dense only when it agrees with cublas, `check ... agree_chunks=` <= 1e-2)
// then the decode shapes (8 and 64 tokens: a few rows per expert, memory-bound): the forward through
// cuBLAS's grouped call (host-side groups) against GroupedMatmulByOffsets (device-side offsets, the
// kernel device routing uses), as the expert weights' bytes read per second:
//   decode op=<op> tokens=<n> impl=<cublas_grouped|by_offsets> ms=<median> weight_gb_per_s=<x> agree=<x>
// and, last, `grouped_vs_dense=<best forward ratio>` (the goal: >= 0.6).
// It also checks the two implementations agree (relative L2 difference printed as `agree=`), so a wrong
// kernel cannot look fast. Without a CUDA device it prints `SKIP: ...` and exits 0.
//
// Timing: warm-up, then 7 rounds of 20 calls between Synchronize() calls; the median round / 20 is
// reported. Host work of the grouped call (building and uploading the group table) is included, since
// the runtime pays it on every call.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "core/backend/cuda/cuda_backend.h"
#include "ops/bench/bench_check.h"

namespace tessera {
namespace {

constexpr int64_t kHidden = 2048, kWidth = 768, kExperts = 64, kTopK = 8;

using bench::Must;

Tensor RandomBf16(Backend& b, std::vector<int64_t> shape, std::mt19937& rng, float scale) {
  Tensor f32 = Must(b.Alloc(shape, DType::kF32), "Alloc");
  std::vector<float> h(f32.numel());
  std::normal_distribution<float> d(0.0f, scale);
  for (float& x : h) x = d(rng);
  CHECK_OK(b.CopyFromHost(h.data(), f32.nbytes(), f32));
  Tensor out = Must(b.Alloc(std::move(shape), DType::kBF16), "Alloc");
  CHECK_OK(b.Copy(f32, out));
  return out;
}

double MedianMs(Backend& b, const std::function<void()>& fn) {
  for (int i = 0; i < 3; ++i) fn();
  CHECK_OK(b.Synchronize());
  std::vector<double> rounds;
  constexpr int kIters = 20;
  for (int r = 0; r < 7; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kIters; ++i) fn();
    CHECK_OK(b.Synchronize());
    const auto t1 = std::chrono::steady_clock::now();
    rounds.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count() / kIters);
  }
  std::sort(rounds.begin(), rounds.end());
  return rounds[rounds.size() / 2];
}

double RelDiff(Backend& b, const Tensor& x, const Tensor& y) {
  const std::vector<float> a = Must(b.ToHostF32(x), "ToHost"), c = Must(b.ToHostF32(y), "ToHost");
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - c[i]) * static_cast<double>(a[i] - c[i]);
    den += static_cast<double>(c[i]) * c[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// Rows per expert for `slots` routed slots: uniform, or skewed (Zipf-like, s = 1).
std::vector<int64_t> RowsPerExpert(int64_t slots, bool skewed, std::mt19937& rng) {
  std::vector<double> p(kExperts, 1.0);
  if (skewed) {
    for (int64_t e = 0; e < kExperts; ++e) p[e] = 1.0 / static_cast<double>(e + 1);
  }
  std::discrete_distribution<int> pick(p.begin(), p.end());
  std::vector<int64_t> rows(kExperts, 0);
  for (int64_t i = 0; i < slots; ++i) ++rows[pick(rng)];
  return rows;
}

// Decode shapes: `tokens` x top-8 routed rows spread uniformly over the experts; the up and down forward
// through both grouped implementations that take a routing decision from different places.
void DecodeShapes(Backend& b, int64_t tokens, const std::vector<Tensor>& w_up, const std::vector<Tensor>& w_down,
                  std::mt19937& rng) {
  const int64_t slots = tokens * kTopK;
  const std::vector<int64_t> rows = RowsPerExpert(slots, false, rng);
  Tensor x = RandomBf16(b, {slots, kHidden}, rng, 1.0f), h = RandomBf16(b, {slots, kWidth}, rng, 1.0f);
  std::vector<GemmGroup> up, down;
  std::vector<int32_t> offsets = {0};
  std::vector<const Tensor*> up_w, down_w;
  int64_t begin = 0, used = 0;
  for (int64_t e = 0; e < kExperts; ++e) {
    if (rows[e] > 0) {
      up.push_back(GemmGroup{begin, rows[e], &w_up[e], nullptr});
      down.push_back(GemmGroup{begin, rows[e], &w_down[e], nullptr});
      ++used;
    }
    begin += rows[e];
    offsets.push_back(static_cast<int32_t>(begin));
    up_w.push_back(&w_up[e]);
    down_w.push_back(&w_down[e]);
  }
  Tensor off = Must(b.FromHost(offsets, {kExperts + 1}), "FromHost");
  const double weight_bytes = static_cast<double>(used) * kHidden * kWidth * 2.0;  // bf16, one projection
  struct Case {
    const char* op;
    const Tensor* in;
    const std::vector<GemmGroup>* groups;
    const std::vector<const Tensor*>* weights;
    int64_t out_dim;
  };
  for (const Case& c : {Case{"up_fwd", &x, &up, &up_w, kWidth}, Case{"down_fwd", &h, &down, &down_w, kHidden}}) {
    Tensor y_cublas = Must(b.Alloc({slots, c.out_dim}, DType::kBF16), "Alloc");
    Tensor y_offsets = Must(b.Alloc({slots, c.out_dim}, DType::kBF16), "Alloc");
    CHECK_OK(SetCudaGroupedGemmImpl(b, GroupedGemmImpl::kCublas));
    CHECK_OK(b.GroupedMatmul(*c.in, *c.groups, y_cublas));
    CHECK_OK(b.GroupedMatmulByOffsets(*c.in, *c.weights, off, y_offsets));
    const double agree = RelDiff(b, y_offsets, y_cublas);
    const double ms_cublas = MedianMs(b, [&] { CHECK_OK(b.GroupedMatmul(*c.in, *c.groups, y_cublas)); });
    const double ms_offsets = MedianMs(b, [&] { CHECK_OK(b.GroupedMatmulByOffsets(*c.in, *c.weights, off, y_offsets)); });
    for (auto [impl, ms] : {std::pair{"cublas_grouped", ms_cublas}, std::pair{"by_offsets", ms_offsets}}) {
      std::printf("decode op=%s tokens=%lld groups=%lld impl=%s ms=%.4f weight_gb_per_s=%.0f agree=%.2e\n", c.op,
                  static_cast<long long>(tokens), static_cast<long long>(used), impl, ms,
                  weight_bytes / (ms * 1e-3) / 1e9, agree);
    }
  }
}

int Run(int64_t tokens) {
  auto made = MakeCudaBackend(0);
  if (!made.ok()) {
    std::printf("SKIP: no CUDA device: %s\n", std::string(made.status().message()).c_str());
    return 0;
  }
  Backend& b = **made;
  std::printf("device=%s tokens=%lld slots=%lld hidden=%lld width=%lld experts=%lld topk=%lld dtype=bf16\n",
              b.name().c_str(), static_cast<long long>(tokens), static_cast<long long>(tokens * kTopK),
              static_cast<long long>(kHidden), static_cast<long long>(kWidth), static_cast<long long>(kExperts),
              static_cast<long long>(kTopK));
  std::mt19937 rng(7);
  const int64_t slots = tokens * kTopK;
  // Expert weights: up-projection [width, hidden] and down-projection [hidden, width].
  std::vector<Tensor> w_up, w_down, g_up;
  for (int64_t e = 0; e < kExperts; ++e) {
    w_up.push_back(RandomBf16(b, {kWidth, kHidden}, rng, 0.02f));
    w_down.push_back(RandomBf16(b, {kHidden, kWidth}, rng, 0.02f));
    g_up.push_back(Must(b.Zeros({kWidth, kHidden}, DType::kF32), "Zeros"));
  }
  Tensor x = RandomBf16(b, {slots, kHidden}, rng, 1.0f);
  Tensor h = RandomBf16(b, {slots, kWidth}, rng, 1.0f);
  Tensor y_up = Must(b.Alloc({slots, kWidth}, DType::kBF16), "Alloc");
  Tensor y_up2 = Must(b.Alloc({slots, kWidth}, DType::kBF16), "Alloc");
  Tensor y_down = Must(b.Alloc({slots, kHidden}, DType::kBF16), "Alloc");
  Tensor dx = Must(b.Alloc({slots, kHidden}, DType::kBF16), "Alloc");
  // Dense references with the same FLOPs: [slots, hidden] x [hidden, width] (and the down shape).
  Tensor dense_w_up = RandomBf16(b, {kWidth, kHidden}, rng, 0.02f);
  Tensor dense_w_down = RandomBf16(b, {kHidden, kWidth}, rng, 0.02f);
  Tensor dense_g = Must(b.Zeros({kWidth, kHidden}, DType::kF32), "Zeros");

  const double flops = 2.0 * static_cast<double>(slots) * kHidden * kWidth;
  struct Op {
    const char* name;
    std::function<void(const std::vector<GemmGroup>&, const std::vector<GemmGroup>&)> grouped;
    std::function<void()> dense;
  };
  const std::vector<Op> ops = {
      {"up_fwd", [&](const auto& up, const auto&) { CHECK_OK(b.GroupedMatmul(x, up, y_up)); },
       [&] { CHECK_OK(b.Matmul(x, false, dense_w_up, true, y_up)); }},
      {"down_fwd", [&](const auto&, const auto& down) { CHECK_OK(b.GroupedMatmul(h, down, y_down)); },
       [&] { CHECK_OK(b.Matmul(h, false, dense_w_down, true, y_down)); }},
      {"up_dgrad", [&](const auto& up, const auto&) { CHECK_OK(b.GroupedMatmulInputGrad(h, up, dx)); },
       [&] { CHECK_OK(b.Matmul(h, false, dense_w_up, false, dx)); }},
      {"up_wgrad", [&](const auto& up, const auto&) { CHECK_OK(b.GroupedMatmulWeightGrad(x, h, up)); },
       [&] { CHECK_OK(b.Matmul(h, true, x, false, dense_g, 1.0f, 1.0f)); }},
  };

  double best_fwd_ratio = 0.0;
  for (bool skewed : {false, true}) {
    const std::vector<int64_t> rows = RowsPerExpert(slots, skewed, rng);
    std::vector<GemmGroup> up, down;
    int64_t begin = 0;
    for (int64_t e = 0; e < kExperts; ++e) {
      up.push_back(GemmGroup{begin, rows[e], &w_up[e], &g_up[e]});
      down.push_back(GemmGroup{begin, rows[e], &w_down[e], nullptr});
      begin += rows[e];
    }
    const char* routing = skewed ? "skewed" : "uniform";
    // Agreement of the two implementations on the forward.
    CHECK_OK(SetCudaGroupedGemmImpl(b, GroupedGemmImpl::kCublas));
    CHECK_OK(b.GroupedMatmul(x, up, y_up));
    CHECK_OK(SetCudaGroupedGemmImpl(b, GroupedGemmImpl::kKernel));
    CHECK_OK(b.GroupedMatmul(x, up, y_up2));
    std::printf("check routing=%s agree=%.2e (relative L2, cublas vs kernel, up_fwd)\n", routing, RelDiff(b, y_up2, y_up));
    CHECK_OK(SetCudaGroupedGemmImpl(b, GroupedGemmImpl::kCublasChunks));
    CHECK_OK(b.GroupedMatmul(x, up, y_up2));
    const double agree_chunks = RelDiff(b, y_up2, y_up);
    const bool chunks_ok = agree_chunks <= 1e-2;  // NaN fails too
    std::printf("check routing=%s agree_chunks=%.2e (relative L2, cublas vs chunks, up_fwd)\n", routing, agree_chunks);
    for (const Op& op : ops) {
      const double dense_ms = MedianMs(b, op.dense);
      const double dense_tflops = flops / (dense_ms * 1e-3) / 1e12;
      for (GroupedGemmImpl impl : {GroupedGemmImpl::kCublas, GroupedGemmImpl::kKernel, GroupedGemmImpl::kCublasChunks}) {
        CHECK_OK(SetCudaGroupedGemmImpl(b, impl));
        const double ms = MedianMs(b, [&] { op.grouped(up, down); });
        const double tflops = flops / (ms * 1e-3) / 1e12;
        const double ratio = tflops / dense_tflops;
        std::printf("grouped op=%s routing=%s impl=%s ms=%.4f tflops=%.1f dense_tflops=%.1f ratio=%.3f\n", op.name,
                    routing, GroupedGemmImplName(impl), ms, tflops, dense_tflops, ratio);
        const bool counts = impl != GroupedGemmImpl::kCublasChunks || chunks_ok;
        if (std::strstr(op.name, "_fwd") != nullptr && !skewed && counts) best_fwd_ratio = std::max(best_fwd_ratio, ratio);
      }
    }
  }
  for (int64_t decode_tokens : {int64_t{8}, int64_t{64}}) DecodeShapes(b, decode_tokens, w_up, w_down, rng);
  std::printf("grouped_vs_dense=%.3f\n", best_fwd_ratio);
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  int64_t tokens = 4096;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--tokens=", 9) == 0) tokens = std::atoll(argv[i] + 9);
  }
  return tessera::Run(tokens);
}
