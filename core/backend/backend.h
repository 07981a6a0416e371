// The backend interface: every numerical op the model needs, forward and backward, explicitly (in the
// manner of llm.c: no autograd). Two implementations: `cpu` (float32, OpenBLAS; the reference) and
// `cuda` (cuBLAS + our kernels). Every op is tested on every backend against the CPU one.
//
// Conventions for every op below:
//  - Tensors are dense row-major (see core/tensor/tensor.h) and live on this backend's device.
//  - Float tensors may be stored as kF32, kBF16 or kF16, independently per argument, on every backend:
//    ops widen to fp32, compute in fp32 and round once when they store (bf16: to nearest even). The
//    exceptions are statistics and optimizer state that the op names f32 (rstd, lse, topk_w, gather
//    scales, dtopk_w, AdamW m and v), and the matmul rule CheckMatmulDtypes states (A and B share a
//    dtype; C is f32 or theirs), which is what tensor cores need. The CPU backend computes f32 kernels
//    on f32 stand-ins of narrower arguments (cpu/cpu_narrow_storage.h). Index tensors are kI32.
//  - "[N,D]" means rank 2 with those dims; ops taking "[N,D]" accept any rank whose trailing dim is D
//    and whose leading dims multiply to N (use Tensor::Flat2D()).
//  - Outputs are overwritten unless the op says "accumulates" (+=). Gradients of weights accumulate,
//    so gradient accumulation over micro-batches needs no extra op; gradients of activations overwrite.
//  - Shape/dtype/device mismatches return INVALID_ARGUMENT naming the argument; device failures return
//    INTERNAL, out of device memory RESOURCE_EXHAUSTED. Ops never abort the process.
//  - Ops are asynchronous on devices that can be; Synchronize() waits. CopyToHost synchronizes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/tensor/tensor.h"

namespace tessera {

// One group of a grouped expert matmul: rows [row_begin, row_begin + rows) of the activations use
// `weight` (HF nn.Linear layout: [out_features, in_features]).
struct GemmGroup {
  int64_t row_begin = 0;
  int64_t rows = 0;
  const Tensor* weight = nullptr;
  Tensor* weight_grad = nullptr;  // same shape as weight; only GroupedMatmulWeightGrad uses it
};

// One copy of a batched CopyMany.
struct CopyPair {
  const Tensor* src = nullptr;
  Tensor* dst = nullptr;
};

// One sequence of a batched causal attention call. Query rows [q_begin, q_begin + q_len) of `q` belong
// to this sequence; they are its LAST q_len positions, i.e. query i sits at absolute position
// p = kv_len - q_len + i and attends to keys/values [0, p] (causal), or, with a sliding window
// (window > 0), to the `window` positions ending at itself: [max(0, p - window + 1), p] (transformers'
// sliding_window_overlay: key j is visible when p - window < j <= p). `k`/`v` hold at least kv_len rows:
// [>= kv_len, num_kv_heads, head_dim] (a KV cache, or this batch's own keys in training).
struct AttentionSeq {
  int64_t q_begin = 0;
  int64_t q_len = 0;
  int64_t kv_len = 0;
  const Tensor* k = nullptr;
  const Tensor* v = nullptr;
  Tensor* dk = nullptr;  // backward only: same shape as k; accumulates
  Tensor* dv = nullptr;  // backward only: same shape as v; accumulates
  int64_t window = 0;    // 0: full causal attention; > 0: sliding window of this many keys (see above)
  // Paged keys/values (a paged KV cache, core/model/kv_block_pool.h), forward only and only on a backend
  // whose SupportsPagedKv() is true: when block_tokens > 0, k/v are the block pool's storage and key j is
  // storage row blocks[j / block_tokens] * block_tokens + j % block_tokens (blocks cover kv_len).
  absl::Span<const int32_t> blocks;
  int64_t block_tokens = 0;
};

struct AdamWParams {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  int64_t step = 1;  // 1-based step count, for bias correction
};

// One parameter of a batched AdamWMany: AdamW(*param, *grad, *m, *v) with this entry's weight decay,
// then, when `narrow` is set, Copy(*param, *narrow) (a bf16 weight receiving its f32 master's rounding).
struct AdamWTensor {
  Tensor* param = nullptr;
  const Tensor* grad = nullptr;
  Tensor* m = nullptr;
  Tensor* v = nullptr;
  Tensor* narrow = nullptr;  // optional
  float weight_decay = 0.0f;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual DeviceKind device() const = 0;
  virtual std::string name() const = 0;  // "cpu", "cuda:0 (NVIDIA H100 ...)"

  // ---- Memory -------------------------------------------------------------------------------------
  // Uninitialized tensor of `shape` on this device.
  virtual absl::StatusOr<Tensor> Alloc(std::vector<int64_t> shape, DType dtype) = 0;
  // Sets every element of a float tensor (any float dtype) to `value`; for kI32, to int(value).
  virtual absl::Status Fill(Tensor& t, float value) = 0;
  // Copies nbytes == dst.nbytes() of host memory laid out as dst (same dtype) into dst.
  virtual absl::Status CopyFromHost(const void* src, size_t nbytes, Tensor& dst) = 0;
  // Copies src (nbytes == src.nbytes()) to host memory; waits for pending work on src.
  virtual absl::Status CopyToHost(const Tensor& src, void* dst, size_t nbytes) = 0;
  // dst = src for tensors of this backend with equal numel; converts between float dtypes.
  virtual absl::Status Copy(const Tensor& src, Tensor& dst) = 0;
  virtual absl::Status Synchronize() = 0;
  // Copy(*p.src, *p.dst) for every pair, as if in order (e.g. the KV-cache append of every sequence of a
  // batch). INVALID_ARGUMENT names pairs[i]. Devices run pairs whose tensors do not overlap as one launch.
  virtual absl::Status CopyMany(absl::Span<const CopyPair> pairs);

  // Convenience (non-virtual): Alloc + Fill(0); Alloc + CopyFromHost of f32/i32 host vectors.
  absl::StatusOr<Tensor> Zeros(std::vector<int64_t> shape, DType dtype = DType::kF32);
  absl::StatusOr<Tensor> FromHost(const std::vector<float>& values, std::vector<int64_t> shape);
  absl::StatusOr<Tensor> FromHost(const std::vector<int32_t>& values, std::vector<int64_t> shape);
  absl::StatusOr<std::vector<float>> ToHostF32(const Tensor& t);  // converts bf16/f16 to f32
  absl::StatusOr<std::vector<int32_t>> ToHostI32(const Tensor& t);

  // ---- Element-wise -------------------------------------------------------------------------------
  // out = a + b (same numel). out may alias a or b.
  virtual absl::Status Add(const Tensor& a, const Tensor& b, Tensor& out) = 0;
  // y += alpha * x (same numel).
  virtual absl::Status Axpy(float alpha, const Tensor& x, Tensor& y) = 0;
  // x *= alpha.
  virtual absl::Status Scale(Tensor& x, float alpha) = 0;
  // Returns sum(x^2) as a double on the host (for global-norm gradient clipping). Synchronizes.
  virtual absl::StatusOr<double> SumSquares(const Tensor& x) = 0;

  // ---- Dense matmul -------------------------------------------------------------------------------
  // c = alpha * op(a) @ op(b) + beta * c, op(x) = x^T when trans_x. a, b, c rank 2 (use Flat2D()).
  // With beta == 0, c's prior contents are ignored (may be uninitialized).
  virtual absl::Status Matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
                              float alpha = 1.0f, float beta = 0.0f) = 0;

  // ---- Grouped expert matmul (the MoE hot path) -----------------------------------------------------
  // Groups are disjoint row ranges; rows outside every group are left untouched in the output.
  // Forward:      y[g] = x[g] @ W_g^T         x: [N, in],  y: [N, out]
  virtual absl::Status GroupedMatmul(const Tensor& x, absl::Span<const GemmGroup> groups, Tensor& y) = 0;
  // Input grad:   dx[g] = dy[g] @ W_g         dy: [N, out], dx: [N, in]
  virtual absl::Status GroupedMatmulInputGrad(const Tensor& dy, absl::Span<const GemmGroup> groups,
                                              Tensor& dx) = 0;
  // Weight grad:  dW_g += dy[g]^T @ x[g]      for groups whose weight_grad != nullptr (accumulates)
  virtual absl::Status GroupedMatmulWeightGrad(const Tensor& x, const Tensor& dy,
                                               absl::Span<const GemmGroup> groups) = 0;

  // ---- Device-side MoE routing (a forward with no host round trip per layer) ------------------------
  // The host-planned path (core/model/moe_plan.h) copies the router's top-k to the host to build the
  // groups, which drains a GPU's stream once per layer. These two ops keep the grouping on the device.
  // Both have a generic implementation here (through the host: the reference); CUDA overrides them.
  //
  // Sorts the M = N*k assignments a = t*k + j (token t, choice j) by the weight set each uses,
  //   set(a) = weight_table[token_rank[t], topk_idx[a]]
  // stably (ties keep a's order), and writes for the assignment at sorted position i:
  //   token_idx[i] = t,  gate_w[i] = topk_w[a];  offsets[w] = the first position whose set is >= w.
  // So set w's assignments are positions [offsets[w], offsets[w+1]), offsets[W] = M.
  //   topk_idx: [N, k] i32 in [0, E); topk_w: [N, k] f32; token_rank: [N] i32 in [0, R);
  //   weight_table: [R, E] i32 in [0, W); token_idx: [M] i32; gate_w: [M] f32; offsets: [W + 1] i32.
  // Out-of-range values: INVALID_ARGUMENT (devices report it at the next synchronization, like indices).
  virtual absl::Status MoeSortAssignments(const Tensor& topk_idx, const Tensor& topk_w, const Tensor& token_rank,
                                          const Tensor& weight_table, Tensor& token_idx, Tensor& gate_w,
                                          Tensor& offsets);
  // GroupedMatmul with the groups' row ranges on the device: for every w in [0, W),
  //   y[offsets[w] : offsets[w+1]] = x[offsets[w] : offsets[w+1]] @ weights[w]^T
  // x: [M, in]; y: [M, out]; weights: W tensors [out, in] of one dtype (CheckMatmulDtypes with x, y);
  // offsets: [W + 1] i32, nondecreasing, in [0, M]. Rows outside [offsets[0], offsets[W]) are untouched.
  virtual absl::Status GroupedMatmulByOffsets(const Tensor& x, absl::Span<const Tensor* const> weights,
                                              const Tensor& offsets, Tensor& y);

  // ---- Row gather / scatter (MoE token permute / unpermute) -----------------------------------------
  // dst[i] = scale[i] * src[idx[i]]     src: [N, D], idx: [M] i32 in [0, N), dst: [M, D];
  // `scale` ([M] f32) may be nullptr for 1.
  virtual absl::Status GatherRows(const Tensor& src, const Tensor& idx, const Tensor* scale,
                                  Tensor& dst) = 0;
  // dst[idx[i]] += scale[i] * src[i]    src: [M, D], dst: [N, D] (accumulates; idx may repeat)
  virtual absl::Status ScatterAddRows(const Tensor& src, const Tensor& idx, const Tensor* scale,
                                      Tensor& dst) = 0;
  // out[i] = dot(a[i], b[idx[i]])       a: [M, D], b: [N, D], out: [M]  (gradient of the scale above)
  virtual absl::Status RowDotGather(const Tensor& a, const Tensor& b, const Tensor& idx, Tensor& out) = 0;

  // ---- Embedding ----------------------------------------------------------------------------------
  // out[i] = table[ids[i]]              table: [V, D], ids: [N] i32 (each in [0, V)), out: [N, D]
  virtual absl::Status EmbeddingForward(const Tensor& table, const Tensor& ids, Tensor& out) = 0;
  // dtable[ids[i]] += dout[i]  (accumulates)
  virtual absl::Status EmbeddingBackward(const Tensor& ids, const Tensor& dout, Tensor& dtable) = 0;

  // ---- RMSNorm ------------------------------------------------------------------------------------
  // out[n] = x[n] * rstd[n] * weight,  rstd[n] = 1 / sqrt(mean(x[n]^2) + eps)
  // x, out: [N, D]; weight: [D]; rstd: [N] f32 (written, kept for backward; may be nullptr).
  // Per-head q/k norm is the same op on a [N * heads, head_dim] view.
  virtual absl::Status RmsNormForward(const Tensor& x, const Tensor& weight, float eps, Tensor& out,
                                      Tensor* rstd) = 0;
  // dx = d/dx (overwrites); dweight += sum_n dout[n] * x[n] * rstd[n] when dweight != nullptr.
  virtual absl::Status RmsNormBackward(const Tensor& x, const Tensor& weight, const Tensor& rstd,
                                       const Tensor& dout, Tensor& dx, Tensor* dweight) = 0;

  // ---- Rotary position embedding (HF "rotate_half" convention) -----------------------------------
  // In place on x: [N, H, head_dim]; positions: [N] i32. For i < half = head_dim / 2,
  //   inv_freq_i = theta^(-2i / head_dim), a = pos * inv_freq_i,
  //   x'[i]        = x[i] * cos(a) - x[i + half] * sin(a)
  //   x'[i + half] = x[i + half] * cos(a) + x[i] * sin(a)
  // inverse = true applies the opposite rotation (angle -a): that is the backward of the forward.
  virtual absl::Status Rope(Tensor& x, const Tensor& positions, float theta, bool inverse) = 0;
  // The same rotation with given per-pair inverse frequencies (inv_freq: head_dim / 2 values, e.g. from
  // a rope_scaling: linear, llama3, yarn): a = pos * inv_freq[i]. A generic implementation through the
  // host (the reference, and what every backend runs: scaled RoPE is rarer than the default one).
  virtual absl::Status RopeFreqs(Tensor& x, const Tensor& positions, absl::Span<const float> inv_freq,
                                 bool inverse);

  // ---- Causal attention with GQA --------------------------------------------------------------------
  // q, out: [Nq, H, head_dim]; each sequence's k/v: [>= kv_len, KVH, head_dim], H % KVH == 0, query
  // head h reads kv head h / (H / KVH). out = softmax(q k^T * scale + mask) v per sequence, the mask
  // causal or causal sliding-window (AttentionSeq::window; negative windows are INVALID_ARGUMENT).
  // Keys outside a query's window are never read, so a windowed call costs O(q_len * window) and a
  // backward adds nothing into dk/dv rows no query sees.
  // lse ([Nq, H] f32, may be nullptr) receives the log-sum-exp of each softmax row for backward.
  // Whether AttentionForward accepts paged sequences (AttentionSeq::block_tokens > 0). Model::Forward
  // gathers a paged cache into a contiguous copy for a backend that does not.
  virtual bool SupportsPagedKv() const { return false; }
  virtual absl::Status AttentionForward(const Tensor& q, absl::Span<const AttentionSeq> seqs,
                                        float scale, Tensor& out, Tensor* lse) = 0;
  // dq overwrites; each sequence's dk/dv accumulate. Needs the forward's out and lse.
  virtual absl::Status AttentionBackward(const Tensor& q, absl::Span<const AttentionSeq> seqs,
                                         float scale, const Tensor& out, const Tensor& lse,
                                         const Tensor& dout, Tensor& dq) = 0;

  // ---- Router -------------------------------------------------------------------------------------
  // probs = softmax(logits) over E experts; topk_idx/topk_w = the k largest probs per row (ties: the
  // lower expert index first; output sorted by descending prob); if normalize, topk_w /= sum(topk_w).
  // logits, probs: [N, E]; topk_idx: [N, k] i32; topk_w: [N, k] f32.
  virtual absl::Status RouterForward(const Tensor& logits, int k, bool normalize, Tensor& probs,
                                     Tensor& topk_idx, Tensor& topk_w) = 0;
  // dlogits (overwrites) from d topk_w, through the (optional) renormalization and the softmax.
  virtual absl::Status RouterBackward(const Tensor& probs, const Tensor& topk_idx, const Tensor& topk_w,
                                      bool normalize, const Tensor& dtopk_w, Tensor& dlogits) = 0;

  // ---- SwiGLU -------------------------------------------------------------------------------------
  // out = silu(gate) * up, silu(g) = g / (1 + exp(-g)); all [N, F].
  virtual absl::Status SwiGluForward(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  virtual absl::Status SwiGluBackward(const Tensor& gate, const Tensor& up, const Tensor& dout,
                                      Tensor& dgate, Tensor& dup) = 0;

  // ---- Vocabulary ---------------------------------------------------------------------------------
  // out[n] = log_softmax(logits[n])     logits, out: [N, V]
  virtual absl::Status LogSoftmax(const Tensor& logits, Tensor& out) = 0;
  // loss[n] = -log_softmax(logits[n])[targets[n]], or 0 where targets[n] < 0 (ignored position).
  // lse ([N] f32, may be nullptr) receives logsumexp(logits[n]) for the backward.
  virtual absl::Status CrossEntropyForward(const Tensor& logits, const Tensor& targets, Tensor& loss,
                                           Tensor* lse) = 0;
  // dlogits[n] = dloss[n] * (softmax(logits[n]) - onehot(targets[n])); rows with targets < 0 get 0.
  virtual absl::Status CrossEntropyBackward(const Tensor& logits, const Tensor& targets,
                                            const Tensor& lse, const Tensor& dloss, Tensor& dlogits) = 0;

  // ---- Optimizer ----------------------------------------------------------------------------------
  // AdamW with decoupled weight decay, in place on param, m, v (all the same numel, f32):
  //   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
  //   param -= lr * ( (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) + weight_decay * param )
  virtual absl::Status AdamW(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                             const AdamWParams& p) = 0;
  // A whole optimizer step: every entry as described at AdamWTensor, as if in order, with `p` but each
  // entry's weight_decay (p.weight_decay is ignored). INVALID_ARGUMENT names entries[i]. Devices run
  // entries whose written tensors overlap nothing else as one launch (a fine-tune of ~100 expert slots
  // updates ~300 tensors per step: one launch instead of ~600 AdamW and Copy launches).
  virtual absl::Status AdamWMany(absl::Span<const AdamWTensor> entries, const AdamWParams& p);
};

// The dtype rule of every matmul (Matmul and the grouped ones): A and B share a dtype; C is f32 or A's
// dtype. INVALID_ARGUMENT naming `op` otherwise; every backend checks it before computing.
absl::Status CheckMatmulDtypes(DType a, DType b, DType c, absl::string_view op);

// The checks every backend makes of a MoeSortAssignments call before touching values (dtypes, ranks,
// element counts; INVALID_ARGUMENT naming the argument), and the dimensions they imply.
struct MoeSortDims {
  int64_t n = 0, k = 0, ranks = 0, experts = 0, sets = 0;  // N, k, R, E, W
};
absl::StatusOr<MoeSortDims> CheckMoeSortAssignments(const Tensor& topk_idx, const Tensor& topk_w,
                                                    const Tensor& token_rank, const Tensor& weight_table,
                                                    const Tensor& token_idx, const Tensor& gate_w,
                                                    const Tensor& offsets);

// How a backend shares its device with others in the process.
struct BackendOptions {
  // CUDA: the backend's stream gets the device's highest priority, so when the GPU is shared (serving
  // and training jobs each compute on a backend of their own), the block scheduler starts this
  // stream's kernels ahead of queued lower-priority work: a serving step waits for the training
  // kernels already running, not for the rest of a training step. CPU: no effect (one shared thread pool).
  bool high_priority = false;
  // CUDA: range-check index tensors before each op that reads them, so a bad index is INVALID_ARGUMENT from
  // that op (a stream synchronization per such op; see SetCudaEagerIndexChecks). false for callers whose
  // indices are produced or validated on the host already (the model's forward): kernels still skip bad
  // rows and the next synchronization reports them. CPU: always eager.
  bool eager_index_checks = true;
  // > 0: Alloc fails with RESOURCE_EXHAUSTED once the bytes this backend has allocated and not freed
  // would exceed it (memory_budget.h): a training job's cap on a device shared with serving. 0: no cap.
  int64_t memory_limit_bytes = 0;
  // CPU: buffers of 128 KiB and up come from a pool of this backend's own (cpu/host_buffer_pool.h):
  // mmapped, reused by size class by later Allocs, unmapped when the backend is destroyed. For a
  // backend whose shapes repeat and whose life ends (a training job's): its memory goes back to the OS
  // instead of fragmenting malloc's arenas. false: malloc. CUDA: no effect.
  bool pool_host_buffers = false;
  // CPU: attention reads paged KV caches through their block tables (SupportsPagedKv). false: the model
  // gathers them into contiguous copies first, as it does for backends without paged attention (tests
  // use it to run that path on the CPU). CUDA: no effect (its kernels read contiguous keys).
  bool paged_kv_attention = true;
};

// The CPU backend (always available). Of the options it uses memory_limit_bytes.
std::unique_ptr<Backend> MakeCpuBackend(const BackendOptions& options = {});

// The CUDA backend on `device_ordinal`. FAILED_PRECONDITION (with the reason) when the build has no
// CUDA support or no usable GPU is present; callers and tests use that to skip.
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device_ordinal = 0, const BackendOptions& options = {});

// "cpu" or "cuda" / "cuda:N".
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const std::string& spec, const BackendOptions& options = {});

}  // namespace tessera
