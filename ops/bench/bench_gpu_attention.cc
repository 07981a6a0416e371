// GPU benchmark: causal GQA attention (Backend::AttentionForward / AttentionBackward), both CUDA
// implementations (AttentionImpl::kRowwise, one block per (query row, head); AttentionImpl::kTiled, the
// FlashAttention-2-style bf16 tensor-core kernels of cuda_attention_tiled.cu) on Qwen3-MoE-like attention:
// 32 query heads, 4 KV heads, head_dim 128, bf16 q/k/v/out/dout/dq, f32 lse, f32 dk/dv (as the model's
// training backward uses them). Shapes:
//   train          8 sequences x 512 tokens, q_len == kv_len, each sequence's k/v its own rows of one
//                  [4096, 4, 128] tensor (like model_backward.cc); forward with lse, and backward
//   prefill_cache  4 sequences x 256 new queries over a 1024-row KV-cache prefix (kv_len 1280, cache
//                  tensors of 1536 rows); forward only, without lse (as serving calls it)
//   train at head_dim 64 (16 heads, 4 KV heads), the tiled kernels' other instantiation.
// For each shape it first checks tiled against rowwise on the same inputs (the rowwise kernel passed CPU
// parity on an H100): relative L2 difference of out, lse and (train) dq, dk, dv, where dk/dv start from
// zero for each run (they accumulate) and both backward runs get the rowwise forward's out and lse:
//   check shape=<s> head_dim=<d> out=<x> lse=<x> dq=<x> dk=<x> dv=<x> ok=<0|1>
// (ok: every difference finite and <= 3e-2, bf16 tolerance; `-` where the shape has no backward), then
// times each pass and implementation:
//   attn shape=<s> head_dim=<d> pass=<fwd|bwd> impl=<rowwise|tiled> ms=<median> tflops=<x>
// and, last,
//   attention_tiled_speedup=<train fwd+bwd ms rowwise / tiled at head_dim 128> tiled_ok=<0|1>
// Exit status: 0 when every check passed; 3 when a check failed or a tiled call returned an error (then
// the last line says tiled_ok=0, so ops/gpu-check.sh can fall back to the row-wise kernel and go on);
// 1 on any other failed call. Without a CUDA device it prints `SKIP: ...` and exits 0.
//
// FLOPs (causal, counting only visible query-key pairs): forward = 4 * head_dim * heads * sum over
// queries of the keys each one sees (QK^T and PV, 2 FLOPs per multiply-add); backward = 2.5 x forward
// (the FlashAttention-2 convention: five matmuls of that size, QK^T recomputed, dV, dP, dQ and dK,
// against the forward's two).
// Timing: warm-up, one timed call picks N (rounds of about 20 ms, 1 <= N <= 20), then 7 rounds of N
// calls between Synchronize() calls; the median round / N is reported. Host work of each call (building
// and uploading the sequence and tile tables) is included, since the runtime pays it on every call.
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

constexpr double kTolerance = 3e-2;

using bench::Must;

// A failed call of the tiled implementation (or the Synchronize after it, where a kernel fault shows up)
// is a failed check: the last line says so and the exit status is 3, so the GPU run falls back to the
// row-wise kernel and goes on. Anything else that fails is a plain failure (exit 1).
void CheckTiled(const absl::Status& s, const std::string& what) {
  if (s.ok()) return;
  std::printf("FAILED tiled %s: %s\n", what.c_str(), std::string(s.message()).c_str());
  std::printf("attention_tiled_speedup=0.000 tiled_ok=0\n");
  std::fflush(stdout);
  std::exit(3);
}

void CheckStatus(const absl::Status& s, bool tiled, const std::string& what) {
  if (tiled) {
    CheckTiled(s, what);
  } else if (!s.ok()) {
    std::fprintf(stderr, "FAILED %s: %s\n", what.c_str(), std::string(s.message()).c_str());
    std::exit(1);
  }
}

Tensor RandomBf16(Backend& b, std::vector<int64_t> shape, std::mt19937& rng) {
  Tensor f32 = Must(b.Alloc(shape, DType::kF32), "Alloc");
  std::vector<float> h(f32.numel());
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (float& x : h) x = d(rng);
  CHECK_OK(b.CopyFromHost(h.data(), f32.nbytes(), f32));
  Tensor out = Must(b.Alloc(std::move(shape), DType::kBF16), "Alloc");
  CHECK_OK(b.Copy(f32, out));
  return out;
}

double MedianMs(Backend& b, const std::function<absl::Status()>& fn, bool tiled, const std::string& what) {
  for (int i = 0; i < 2; ++i) CheckStatus(fn(), tiled, what);
  CheckStatus(b.Synchronize(), tiled, what + " (synchronize)");
  auto t0 = std::chrono::steady_clock::now();
  CheckStatus(fn(), tiled, what);
  CheckStatus(b.Synchronize(), tiled, what + " (synchronize)");
  const double once = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const int iters = static_cast<int>(std::clamp(std::ceil(20.0 / std::max(once, 1e-3)), 1.0, 20.0));
  std::vector<double> rounds;
  for (int r = 0; r < 7; ++r) {
    t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) CheckStatus(fn(), tiled, what);
    CheckStatus(b.Synchronize(), tiled, what + " (synchronize)");
    const auto t1 = std::chrono::steady_clock::now();
    rounds.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count() / iters);
  }
  std::sort(rounds.begin(), rounds.end());
  return rounds[rounds.size() / 2];
}

// Relative L2 difference |x - ref| / |ref|; NaN when either holds a NaN or Inf.
double RelDiff(Backend& b, const Tensor& x, const Tensor& ref) {
  const std::vector<float> a = Must(b.ToHostF32(x), "ToHost"), c = Must(b.ToHostF32(ref), "ToHost");
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(c[i])) return std::nan("");
    num += (a[i] - c[i]) * static_cast<double>(a[i] - c[i]);
    den += static_cast<double>(c[i]) * c[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

bool Bitwise(Backend& b, const Tensor& x, const Tensor& y) {
  return Must(b.ToHostF32(x), "ToHost") == Must(b.ToHostF32(y), "ToHost");
}

struct Shape {
  const char* name;
  int64_t heads, kv_heads, head_dim;
  int64_t num_seqs, q_len, kv_len;
  int64_t cache_rows;  // 0: training (each sequence's k/v are its own q_len rows of one tensor)
  bool backward;
};

// Query-key pairs that the causal mask leaves visible, summed over every sequence (per head).
double VisiblePairs(const Shape& s) {
  double pairs = 0;
  for (int64_t i = 0; i < s.q_len; ++i) pairs += static_cast<double>(s.kv_len - s.q_len + i + 1);
  return pairs * static_cast<double>(s.num_seqs);
}

struct Timing {
  double fwd_ms = 0, bwd_ms = 0;
};

// One shape: the check, then the timings of both implementations. Returns whether the check passed.
bool RunShape(Backend& b, const Shape& s, std::mt19937& rng, Timing& rowwise, Timing& tiled) {
  const int64_t nq = s.num_seqs * s.q_len, h = s.heads, kvh = s.kv_heads, hd = s.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const std::string tag = std::string(s.name) + " head_dim=" + std::to_string(hd);
  const bool train = s.cache_rows == 0;

  Tensor q = RandomBf16(b, {nq, h, hd}, rng);
  const Tensor dout = s.backward ? RandomBf16(b, {nq, h, hd}, rng) : Tensor();
  // Keys/values (and, for backward, the two runs' f32 gradients) as one view per sequence.
  std::vector<Tensor> k, v, dk_r, dv_r, dk_t, dv_t;
  Tensor dk_r_all, dv_r_all, dk_t_all, dv_t_all;
  if (train) {
    const Tensor k_all = RandomBf16(b, {nq, kvh, hd}, rng), v_all = RandomBf16(b, {nq, kvh, hd}, rng);
    dk_r_all = Must(b.Zeros({nq, kvh, hd}), "Zeros");
    dv_r_all = Must(b.Zeros({nq, kvh, hd}), "Zeros");
    dk_t_all = Must(b.Zeros({nq, kvh, hd}), "Zeros");
    dv_t_all = Must(b.Zeros({nq, kvh, hd}), "Zeros");
    for (int64_t i = 0; i < s.num_seqs; ++i) {
      const int64_t begin = i * s.q_len;
      k.push_back(k_all.Rows(begin, s.q_len));
      v.push_back(v_all.Rows(begin, s.q_len));
      dk_r.push_back(dk_r_all.Rows(begin, s.q_len));
      dv_r.push_back(dv_r_all.Rows(begin, s.q_len));
      dk_t.push_back(dk_t_all.Rows(begin, s.q_len));
      dv_t.push_back(dv_t_all.Rows(begin, s.q_len));
    }
  } else {
    for (int64_t i = 0; i < s.num_seqs; ++i) {
      k.push_back(RandomBf16(b, {s.cache_rows, kvh, hd}, rng));
      v.push_back(RandomBf16(b, {s.cache_rows, kvh, hd}, rng));
    }
  }
  // The vectors above are complete, so pointers into them stay valid.
  auto make_seqs = [&](std::vector<Tensor>* dk, std::vector<Tensor>* dv) {
    std::vector<AttentionSeq> seqs;
    for (int64_t i = 0; i < s.num_seqs; ++i) {
      AttentionSeq a;
      a.q_begin = i * s.q_len;
      a.q_len = s.q_len;
      a.kv_len = s.kv_len;
      a.k = &k[i];
      a.v = &v[i];
      if (dk != nullptr) a.dk = &(*dk)[i];
      if (dv != nullptr) a.dv = &(*dv)[i];
      seqs.push_back(a);
    }
    return seqs;
  };
  const std::vector<AttentionSeq> fwd_seqs = make_seqs(nullptr, nullptr);
  const std::vector<AttentionSeq> seqs_r = make_seqs(train ? &dk_r : nullptr, train ? &dv_r : nullptr);
  const std::vector<AttentionSeq> seqs_t = make_seqs(train ? &dk_t : nullptr, train ? &dv_t : nullptr);

  Tensor out_r = Must(b.Alloc({nq, h, hd}, DType::kBF16), "Alloc"), out_t = Must(b.Alloc({nq, h, hd}, DType::kBF16), "Alloc");
  Tensor lse_r = Must(b.Alloc({nq, h}, DType::kF32), "Alloc"), lse_t = Must(b.Alloc({nq, h}, DType::kF32), "Alloc");
  Tensor dq_r = Must(b.Alloc({nq, h, hd}, DType::kBF16), "Alloc"), dq_t = Must(b.Alloc({nq, h, hd}, DType::kBF16), "Alloc");

  // ---- Check: tiled against rowwise on the same inputs. ----
  CHECK_OK(SetCudaAttentionImpl(b, AttentionImpl::kRowwise));
  CHECK_OK(b.AttentionForward(q, fwd_seqs, scale, out_r, &lse_r));
  if (s.backward) CHECK_OK(b.AttentionBackward(q, seqs_r, scale, out_r, lse_r, dout, dq_r));
  CHECK_OK(b.Synchronize());
  CHECK_OK(SetCudaAttentionImpl(b, AttentionImpl::kTiled));
  CheckTiled(b.AttentionForward(q, fwd_seqs, scale, out_t, &lse_t), tag + " forward");
  // Both backward runs get the rowwise forward's out and lse, so the backward is checked on its own.
  if (s.backward) CheckTiled(b.AttentionBackward(q, seqs_t, scale, out_r, lse_r, dout, dq_t), tag + " backward");
  CheckTiled(b.Synchronize(), tag + " (synchronize after the check's calls)");
  const double d_out = RelDiff(b, out_t, out_r), d_lse = RelDiff(b, lse_t, lse_r);
  std::vector<double> diffs = {d_out, d_lse};
  char bwd_part[160] = "dq=- dk=- dv=-";
  if (s.backward) {
    const double d_dq = RelDiff(b, dq_t, dq_r), d_dk = RelDiff(b, dk_t_all, dk_r_all), d_dv = RelDiff(b, dv_t_all, dv_r_all);
    diffs.insert(diffs.end(), {d_dq, d_dk, d_dv});
    std::snprintf(bwd_part, sizeof(bwd_part), "dq=%.2e dk=%.2e dv=%.2e", d_dq, d_dk, d_dv);
  }
  bool ok = true;
  for (double d : diffs) ok = ok && std::isfinite(d) && d <= kTolerance;
  std::printf("check shape=%s head_dim=%lld out=%.2e lse=%.2e %s ok=%d\n", s.name, static_cast<long long>(hd), d_out,
              d_lse, bwd_part, ok ? 1 : 0);
  if (Bitwise(b, out_t, out_r)) {
    std::printf("note shape=%s head_dim=%lld: tiled out is bitwise the rowwise out; the tiled kernel did not run?\n",
                s.name, static_cast<long long>(hd));
  }

  // ---- Timings. ----
  const double fwd_flops = 4.0 * static_cast<double>(hd) * static_cast<double>(h) * VisiblePairs(s);
  const double bwd_flops = 2.5 * fwd_flops;
  for (AttentionImpl impl : {AttentionImpl::kRowwise, AttentionImpl::kTiled}) {
    const bool is_tiled = impl == AttentionImpl::kTiled;
    const char* impl_name = is_tiled ? "tiled" : "rowwise";
    Timing& t = is_tiled ? tiled : rowwise;
    CHECK_OK(SetCudaAttentionImpl(b, impl));
    Tensor& out = is_tiled ? out_t : out_r;
    Tensor* fwd_lse = train ? (is_tiled ? &lse_t : &lse_r) : nullptr;  // serving's prefill asks for no lse
    t.fwd_ms = MedianMs(b, [&] { return b.AttentionForward(q, fwd_seqs, scale, out, fwd_lse); }, is_tiled,
                        tag + " forward (timing)");
    std::printf("attn shape=%s head_dim=%lld pass=fwd impl=%s ms=%.4f tflops=%.1f\n", s.name,
                static_cast<long long>(hd), impl_name, t.fwd_ms, fwd_flops / (t.fwd_ms * 1e-3) / 1e12);
    if (s.backward) {
      // dk/dv keep accumulating over the timed calls; their values are no longer looked at.
      const std::vector<AttentionSeq>& seqs = is_tiled ? seqs_t : seqs_r;
      Tensor& dq = is_tiled ? dq_t : dq_r;
      t.bwd_ms = MedianMs(b, [&] { return b.AttentionBackward(q, seqs, scale, out_r, lse_r, dout, dq); }, is_tiled,
                          tag + " backward (timing)");
      std::printf("attn shape=%s head_dim=%lld pass=bwd impl=%s ms=%.4f tflops=%.1f\n", s.name,
                  static_cast<long long>(hd), impl_name, t.bwd_ms, bwd_flops / (t.bwd_ms * 1e-3) / 1e12);
    }
  }
  return ok;
}

int Run() {
  auto made = MakeCudaBackend(0);
  if (!made.ok()) {
    std::printf("SKIP: no CUDA device: %s\n", std::string(made.status().message()).c_str());
    return 0;
  }
  Backend& b = **made;
  std::printf("device=%s dtype=bf16 (q/k/v/out/dout/dq), f32 lse/dk/dv, causal GQA attention\n", b.name().c_str());
  std::mt19937 rng(11);
  const Shape shapes[] = {
      {"train", 32, 4, 128, 8, 512, 512, 0, true},
      {"prefill_cache", 32, 4, 128, 4, 256, 1280, 1536, false},
      {"train", 16, 4, 64, 8, 512, 512, 0, true},
  };
  bool all_ok = true;
  double speedup = 0.0;
  for (const Shape& s : shapes) {
    Timing rowwise, tiled;
    all_ok = RunShape(b, s, rng, rowwise, tiled) && all_ok;
    if (std::strcmp(s.name, "train") == 0 && s.head_dim == 128) {
      speedup = (rowwise.fwd_ms + rowwise.bwd_ms) / std::max(tiled.fwd_ms + tiled.bwd_ms, 1e-9);
    }
  }
  std::printf("attention_tiled_speedup=%.3f tiled_ok=%d\n", speedup, all_ok ? 1 : 0);
  return all_ok ? 0 : 3;
}

}  // namespace
}  // namespace tessera

int main() {
  // Line-buffered, so a run cut off by a timeout (a hung kernel) still leaves its lines in the log.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  return tessera::Run();
}
