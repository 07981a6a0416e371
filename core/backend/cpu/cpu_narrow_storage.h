// NarrowStorageBackend: the CPU backend's support for bf16/f16 storage (backend.h: "float tensors may be
// stored as f32, bf16 or f16 ... on every backend").
//
// The CPU kernels (CpuBackend) are f32-only. This backend wraps them: for each op, every float argument
// stored narrower than f32 gets an f32 stand-in (a converted copy), the f32 kernel runs on the
// stand-ins, and every output stand-in is rounded back into its narrow storage (round-to-nearest-even).
// That is the CUDA backend's numerical contract too (widen on load, fp32 math, one rounding at the
// store), so the CPU stays the reference for bf16 models: a bf16 model runs here and its results are
// what the GPU must reproduce up to summation order. Arguments the interface requires in f32 (rstd,
// lse, topk_w, gather scales, dtopk_w, AdamW m and v) are passed through untouched, so a narrow one is
// refused by the kernel's own check, as on the GPU; matmuls enforce CheckMatmulDtypes first.
//
// Cost: an op whose float arguments are all f32 goes straight to the kernel (a dtype test per
// argument). A narrow argument costs a conversion in (and, for outputs, one back) per op: this is a
// reference path, not a fast one. Outputs are converted in as well, because several ops accumulate or
// leave parts of their output untouched (grouped matmul rows outside every group).
// Fast path: Matmul (a @ b^T) and GroupedMatmul with bf16 operands skip the staging. Decode-sized
// products (every one with AVX512_BF16) run cpu_bf16_gemm.h's kernels on the bf16 weights directly (half
// the bytes of f32, no per-call widening; vdpbf16ps where the CPU has it); larger ones widen the weight one
// cache-sized panel at a time for sgemm. f32 accumulation, one rounding at a bf16 store: the same contract
// up to summation order (Bf16DirectMatmul in cpu_backend_internal.h).
// AttentionForward passes decode sequences (fewer than kAttentionBlockedMinQ query rows) with bf16 keys and
// values to the kernel as they are: it reads them in bf16 (cpu_attention.cc), instead of a widened copy of
// the whole KV history per step.
// Aliasing: an argument passed twice (e.g. Add(x, y, x)) gets two stand-ins; the op reads the input's
// and the output's is written back, which is the aliasing the interface allows.
#pragma once

#include <memory>

#include "core/backend/backend.h"

namespace tessera::cpu {

class NarrowStorageBackend final : public Backend {
 public:
  explicit NarrowStorageBackend(std::unique_ptr<Backend> f32_kernels) : k_(std::move(f32_kernels)) {}

  DeviceKind device() const override { return k_->device(); }
  bool SupportsPagedKv() const override { return k_->SupportsPagedKv(); }
  std::string name() const override { return k_->name(); }

  // Memory ops handle every dtype themselves.
  absl::StatusOr<Tensor> Alloc(std::vector<int64_t> shape, DType dtype) override { return k_->Alloc(std::move(shape), dtype); }
  absl::Status Fill(Tensor& t, float value) override { return k_->Fill(t, value); }
  absl::Status CopyFromHost(const void* src, size_t nbytes, Tensor& dst) override {
    return k_->CopyFromHost(src, nbytes, dst);
  }
  absl::Status CopyToHost(const Tensor& src, void* dst, size_t nbytes) override {
    return k_->CopyToHost(src, dst, nbytes);
  }
  absl::Status Copy(const Tensor& src, Tensor& dst) override { return k_->Copy(src, dst); }
  absl::Status Synchronize() override { return k_->Synchronize(); }
  absl::Status CopyMany(absl::Span<const CopyPair> pairs) override { return k_->CopyMany(pairs); }

  absl::Status Add(const Tensor& a, const Tensor& b, Tensor& out) override;
  absl::Status Axpy(float alpha, const Tensor& x, Tensor& y) override;
  absl::Status Scale(Tensor& x, float alpha) override;
  absl::StatusOr<double> SumSquares(const Tensor& x) override;
  absl::Status Matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
                      float beta) override;
  absl::Status GroupedMatmul(const Tensor& x, absl::Span<const GemmGroup> groups, Tensor& y) override;
  absl::Status GroupedMatmulInputGrad(const Tensor& dy, absl::Span<const GemmGroup> groups, Tensor& dx) override;
  absl::Status GroupedMatmulWeightGrad(const Tensor& x, const Tensor& dy, absl::Span<const GemmGroup> groups) override;
  absl::Status GatherRows(const Tensor& src, const Tensor& idx, const Tensor* scale, Tensor& dst) override;
  absl::Status ScatterAddRows(const Tensor& src, const Tensor& idx, const Tensor* scale, Tensor& dst) override;
  absl::Status RowDotGather(const Tensor& a, const Tensor& b, const Tensor& idx, Tensor& out) override;
  absl::Status EmbeddingForward(const Tensor& table, const Tensor& ids, Tensor& out) override;
  absl::Status EmbeddingBackward(const Tensor& ids, const Tensor& dout, Tensor& dtable) override;
  absl::Status RmsNormForward(const Tensor& x, const Tensor& weight, float eps, Tensor& out, Tensor* rstd) override;
  absl::Status RmsNormBackward(const Tensor& x, const Tensor& weight, const Tensor& rstd, const Tensor& dout,
                               Tensor& dx, Tensor* dweight) override;
  absl::Status Rope(Tensor& x, const Tensor& positions, float theta, bool inverse) override;
  absl::Status AttentionForward(const Tensor& q, absl::Span<const AttentionSeq> seqs, float scale, Tensor& out,
                                Tensor* lse) override;
  absl::Status AttentionBackward(const Tensor& q, absl::Span<const AttentionSeq> seqs, float scale,
                                 const Tensor& out, const Tensor& lse, const Tensor& dout, Tensor& dq) override;
  absl::Status RouterForward(const Tensor& logits, int k, bool normalize, Tensor& probs, Tensor& topk_idx,
                             Tensor& topk_w) override;
  absl::Status RouterBackward(const Tensor& probs, const Tensor& topk_idx, const Tensor& topk_w, bool normalize,
                              const Tensor& dtopk_w, Tensor& dlogits) override;
  absl::Status SwiGluForward(const Tensor& gate, const Tensor& up, Tensor& out) override;
  absl::Status SwiGluBackward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate,
                              Tensor& dup) override;
  absl::Status LogSoftmax(const Tensor& logits, Tensor& out) override;
  absl::Status CrossEntropyForward(const Tensor& logits, const Tensor& targets, Tensor& loss, Tensor* lse) override;
  absl::Status CrossEntropyBackward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                    const Tensor& dloss, Tensor& dlogits) override;
  absl::Status AdamW(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p) override;

 private:
  std::unique_ptr<Backend> k_;  // the f32 kernels
};

}  // namespace tessera::cpu
