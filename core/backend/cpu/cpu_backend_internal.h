// Private to the CPU backend: the class declaration shared by the per-op-family source files
// (cpu_backend.cc: memory; cpu_elementwise.cc; cpu_matmul.cc; cpu_rows.cc: gather/scatter/embedding;
// cpu_norm_rope.cc; cpu_attention.cc; cpu_router.cc; cpu_vocab.cc; cpu_optim.cc).
//
// Contract common to every op here: tensors live in host memory (DeviceKind::kCpu); compute ops take
// kF32 floats and kI32 indices and return INVALID_ARGUMENT (naming the op and the argument) for any
// other dtype, device, shape, or out-of-range index, before touching any output.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "core/backend/cpu/host_buffer_pool.h"
#include "core/backend/memory_budget.h"

namespace tessera::cpu {

class CpuBackend final : public Backend {
 public:
  // options.memory_limit_bytes > 0 caps Alloc (memory_budget.h); pool_host_buffers and paged_kv_attention
  // apply as documented; the other options do not.
  explicit CpuBackend(const BackendOptions& options = {});
  ~CpuBackend() override;
  DeviceKind device() const override { return DeviceKind::kCpu; }
  std::string name() const override { return "cpu"; }

  absl::StatusOr<Tensor> Alloc(std::vector<int64_t> shape, DType dtype) override;
  absl::Status Fill(Tensor& t, float value) override;
  absl::Status CopyFromHost(const void* src, size_t nbytes, Tensor& dst) override;
  absl::Status CopyToHost(const Tensor& src, void* dst, size_t nbytes) override;
  absl::Status Copy(const Tensor& src, Tensor& dst) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }
  bool SupportsPagedKv() const override { return paged_kv_; }

  absl::Status Add(const Tensor& a, const Tensor& b, Tensor& out) override;
  absl::Status Axpy(float alpha, const Tensor& x, Tensor& y) override;
  absl::Status Scale(Tensor& x, float alpha) override;
  absl::StatusOr<double> SumSquares(const Tensor& x) override;

  absl::Status Matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
                      float alpha, float beta) override;
  absl::Status GroupedMatmul(const Tensor& x, absl::Span<const GemmGroup> groups, Tensor& y) override;
  absl::Status GroupedMatmulInputGrad(const Tensor& dy, absl::Span<const GemmGroup> groups,
                                      Tensor& dx) override;
  absl::Status GroupedMatmulWeightGrad(const Tensor& x, const Tensor& dy,
                                       absl::Span<const GemmGroup> groups) override;

  absl::Status GatherRows(const Tensor& src, const Tensor& idx, const Tensor* scale, Tensor& dst) override;
  absl::Status ScatterAddRows(const Tensor& src, const Tensor& idx, const Tensor* scale,
                              Tensor& dst) override;
  absl::Status RowDotGather(const Tensor& a, const Tensor& b, const Tensor& idx, Tensor& out) override;

  absl::Status EmbeddingForward(const Tensor& table, const Tensor& ids, Tensor& out) override;
  absl::Status EmbeddingBackward(const Tensor& ids, const Tensor& dout, Tensor& dtable) override;

  absl::Status RmsNormForward(const Tensor& x, const Tensor& weight, float eps, Tensor& out,
                              Tensor* rstd) override;
  absl::Status RmsNormBackward(const Tensor& x, const Tensor& weight, const Tensor& rstd,
                               const Tensor& dout, Tensor& dx, Tensor* dweight) override;

  absl::Status Rope(Tensor& x, const Tensor& positions, float theta, bool inverse) override;

  absl::Status AttentionForward(const Tensor& q, absl::Span<const AttentionSeq> seqs, float scale,
                                Tensor& out, Tensor* lse) override;
  absl::Status AttentionBackward(const Tensor& q, absl::Span<const AttentionSeq> seqs, float scale,
                                 const Tensor& out, const Tensor& lse, const Tensor& dout,
                                 Tensor& dq) override;

  absl::Status RouterForward(const Tensor& logits, int k, bool normalize, Tensor& probs,
                             Tensor& topk_idx, Tensor& topk_w) override;
  absl::Status RouterBackward(const Tensor& probs, const Tensor& topk_idx, const Tensor& topk_w,
                              bool normalize, const Tensor& dtopk_w, Tensor& dlogits) override;

  absl::Status SwiGluForward(const Tensor& gate, const Tensor& up, Tensor& out) override;
  absl::Status SwiGluBackward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate,
                              Tensor& dup) override;

  absl::Status LogSoftmax(const Tensor& logits, Tensor& out) override;
  absl::Status CrossEntropyForward(const Tensor& logits, const Tensor& targets, Tensor& loss,
                                   Tensor* lse) override;
  absl::Status CrossEntropyBackward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                    const Tensor& dloss, Tensor& dlogits) override;

  absl::Status AdamW(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                     const AdamWParams& p) override;

 private:
  std::shared_ptr<MemoryBudget> budget_;  // null: no cap
  std::shared_ptr<HostBufferPool> pool_;  // null: large buffers from malloc (BackendOptions::pool_host_buffers)
  bool paged_kv_ = true;                  // BackendOptions::paged_kv_attention
};

// AttentionForward: sequences with at least this many query rows use the blocked kernel; shorter ones the
// per-row kernel, which also reads bf16 keys and values directly (cpu_attention.cc).
constexpr int64_t kAttentionBlockedMinQ = 16;
// Whether AttentionForward reads this sequence's keys and values in bf16, in place: a per-row (decode)
// sequence whose k and v are both bf16. NarrowStorageBackend passes such sequences through unwidened.
inline bool AttentionReadsBf16InPlace(const AttentionSeq& s) {
  return s.q_len < kAttentionBlockedMinQ && s.k != nullptr && s.v != nullptr && s.k->dtype() == DType::kBF16 &&
         s.v->dtype() == DType::kBF16;
}

// bf16 weights read in bf16 (cpu_matmul.cc). For NarrowStorageBackend: each returns true when it computed
// the call; false (nothing touched) when the call is not one it takes (not bf16 y = x W^T, invalid shapes
// or overlaps), and the caller goes on with the staging path, which reports any error.
// Products of up to Bf16KernelMaxRows() rows (every product with vdpbf16ps, AVX512_BF16; else decode-sized
// ones, <= 8 rows) run cpu_bf16_gemm.h's kernels. Larger ones widen the weight one L2-sized panel at a time
// into the thread's own buffer and run sgemm on it. Both replace the staging path's widened copy of every
// weight per call (a layer's 32 experts: 128 MB of f32 writes for one prefill). A bf16 Mixtral-shaped
// prefill of 128 tokens: on Zen 3 (AVX2) 97-116 tok/s staged, 318-415 with panels (f32: 406-410); with
// vdpbf16ps (Intel) 313 staged, 725-815 (ops/bench/RESULTS.md).
int64_t Bf16KernelMaxRows();
bool Bf16DirectMatmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
                      float beta);
bool Bf16DirectGroupedMatmul(const Tensor& x, absl::Span<const GemmGroup> groups, Tensor& y);

}  // namespace tessera::cpu
