// ProfilingBackend: a Backend that forwards every call to another backend and, while enabled, times
// each op (synchronizing the inner backend after it) and adds the time to a per-op table. It answers
// "where does a decode step / training step spend its time" without a profiler: the ops' share, and
// what is left of the wall time (host work between ops: routing plans, allocation, Python-free
// bookkeeping) as the difference.
//
// Cost and meaning of the numbers: each op waits for the device, so ops no longer overlap with host
// work or each other, and each adds one synchronization (~5-20 us on a GPU). The table is a breakdown
// of a deliberately serialized run, not of the pipelined one; time the real thing without it.
// Memory contract: owns nothing but the table; `inner` must outlive it. Tensors are the inner
// backend's (Alloc forwards), so a model built over this backend can be timed with it disabled and
// enabled without any change. Thread-safety: as the inner backend; the table has its own mutex.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <string>

#include "core/backend/backend.h"

namespace tessera {

class ProfilingBackend final : public Backend {
 public:
  struct OpStats {
    int64_t calls = 0;
    double seconds = 0.0;
  };

  explicit ProfilingBackend(Backend* inner) : inner_(inner) {}

  void set_enabled(bool on) { enabled_ = on; }
  bool enabled() const { return enabled_; }
  void Reset();
  std::map<std::string, OpStats> Table() const;
  // One line per op, by descending time: "  <op> calls=<n> ms=<x> share=<p>%" (share of
  // `wall_seconds`), then "  (outside ops) ms=<x> share=<p>%" for the rest of the wall time.
  std::string Report(double wall_seconds) const;

  DeviceKind device() const override { return inner_->device(); }
  std::string name() const override { return inner_->name(); }

  absl::StatusOr<Tensor> Alloc(std::vector<int64_t> shape, DType dtype) override;
  absl::Status Fill(Tensor& t, float value) override;
  absl::Status CopyFromHost(const void* src, size_t nbytes, Tensor& dst) override;
  absl::Status CopyToHost(const Tensor& src, void* dst, size_t nbytes) override;
  absl::Status Copy(const Tensor& src, Tensor& dst) override;
  absl::Status Synchronize() override { return inner_->Synchronize(); }
  absl::Status CopyMany(absl::Span<const CopyPair> pairs) override;
  absl::Status Add(const Tensor& a, const Tensor& b, Tensor& out) override;
  absl::Status Axpy(float alpha, const Tensor& x, Tensor& y) override;
  absl::Status Scale(Tensor& x, float alpha) override;
  absl::StatusOr<double> SumSquares(const Tensor& x) override;
  absl::Status Matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
                      float beta) override;
  absl::Status GroupedMatmul(const Tensor& x, absl::Span<const GemmGroup> groups, Tensor& y) override;
  absl::Status GroupedMatmulByOffsets(const Tensor& x, absl::Span<const Tensor* const> weights,
                                      const Tensor& offsets, Tensor& y) override;
  absl::Status MoeSortAssignments(const Tensor& topk_idx, const Tensor& topk_w, const Tensor& token_rank,
                                  const Tensor& weight_table, Tensor& token_idx, Tensor& gate_w,
                                  Tensor& offsets) override;
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
  bool SupportsPagedKv() const override { return inner_->SupportsPagedKv(); }
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
  absl::Status AdamWMany(absl::Span<const AdamWTensor> entries, const AdamWParams& p) override;

 private:
  // Runs `f` (an inner call); when enabled, waits for the device and records the elapsed time.
  template <typename F>
  auto Timed(const char* op, F&& f) -> decltype(f()) {
    if (!enabled_) return f();
    const auto t0 = std::chrono::steady_clock::now();
    auto result = f();
    (void)inner_->Synchronize();  // an op's own error is in `result`; a sticky one resurfaces later
    Record(op, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return result;
  }
  void Record(const char* op, double seconds);

  Backend* const inner_;
  bool enabled_ = false;
  mutable std::mutex mu_;
  std::map<std::string, OpStats> table_;
};

}  // namespace tessera
