// ProfilingBackend (see profiling_backend.h): every op forwards to the inner backend through Timed().
#include "core/backend/profiling_backend.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_format.h"

namespace tessera {

void ProfilingBackend::Record(const char* op, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  OpStats& s = table_[op];
  ++s.calls;
  s.seconds += seconds;
}

void ProfilingBackend::Reset() {
  std::lock_guard<std::mutex> lock(mu_);
  table_.clear();
}

std::map<std::string, ProfilingBackend::OpStats> ProfilingBackend::Table() const {
  std::lock_guard<std::mutex> lock(mu_);
  return table_;
}

std::string ProfilingBackend::Report(double wall_seconds) const {
  std::vector<std::pair<std::string, OpStats>> rows;
  for (const auto& kv : Table()) rows.push_back(kv);
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  const double wall = wall_seconds > 0 ? wall_seconds : 1.0;
  std::string out;
  double in_ops = 0.0;
  for (const auto& [op, s] : rows) {
    in_ops += s.seconds;
    out += absl::StrFormat("  %-24s calls=%-6d ms=%9.3f share=%5.1f%%\n", op, s.calls, s.seconds * 1e3,
                           100.0 * s.seconds / wall);
  }
  const double rest = std::max(0.0, wall_seconds - in_ops);
  out += absl::StrFormat("  %-24s              ms=%9.3f share=%5.1f%%\n", "(outside ops)", rest * 1e3, 100.0 * rest / wall);
  return out;
}

absl::StatusOr<Tensor> ProfilingBackend::Alloc(std::vector<int64_t> shape, DType dtype) {
  return Timed("Alloc", [&] { return inner_->Alloc(std::move(shape), dtype); });
}
absl::Status ProfilingBackend::Fill(Tensor& t, float value) {
  return Timed("Fill", [&] { return inner_->Fill(t, value); });
}
absl::Status ProfilingBackend::CopyFromHost(const void* src, size_t nbytes, Tensor& dst) {
  return Timed("CopyFromHost", [&] { return inner_->CopyFromHost(src, nbytes, dst); });
}
absl::Status ProfilingBackend::CopyToHost(const Tensor& src, void* dst, size_t nbytes) {
  return Timed("CopyToHost", [&] { return inner_->CopyToHost(src, dst, nbytes); });
}
absl::Status ProfilingBackend::Copy(const Tensor& src, Tensor& dst) {
  return Timed("Copy", [&] { return inner_->Copy(src, dst); });
}
absl::Status ProfilingBackend::CopyMany(absl::Span<const CopyPair> pairs) {
  return Timed("CopyMany", [&] { return inner_->CopyMany(pairs); });
}
absl::Status ProfilingBackend::Add(const Tensor& a, const Tensor& b, Tensor& out) {
  return Timed("Add", [&] { return inner_->Add(a, b, out); });
}
absl::Status ProfilingBackend::Axpy(float alpha, const Tensor& x, Tensor& y) {
  return Timed("Axpy", [&] { return inner_->Axpy(alpha, x, y); });
}
absl::Status ProfilingBackend::Scale(Tensor& x, float alpha) {
  return Timed("Scale", [&] { return inner_->Scale(x, alpha); });
}
absl::StatusOr<double> ProfilingBackend::SumSquares(const Tensor& x) {
  return Timed("SumSquares", [&] { return inner_->SumSquares(x); });
}
absl::Status ProfilingBackend::Matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
                                      float beta) {
  return Timed("Matmul", [&] { return inner_->Matmul(a, trans_a, b, trans_b, c, alpha, beta); });
}
absl::Status ProfilingBackend::GroupedMatmul(const Tensor& x, absl::Span<const GemmGroup> groups, Tensor& y) {
  return Timed("GroupedMatmul", [&] { return inner_->GroupedMatmul(x, groups, y); });
}
absl::Status ProfilingBackend::GroupedMatmulByOffsets(const Tensor& x, absl::Span<const Tensor* const> weights,
                                                      const Tensor& offsets, Tensor& y) {
  return Timed("GroupedMatmulByOffsets", [&] { return inner_->GroupedMatmulByOffsets(x, weights, offsets, y); });
}
absl::Status ProfilingBackend::MoeSortAssignments(const Tensor& topk_idx, const Tensor& topk_w,
                                                  const Tensor& token_rank, const Tensor& weight_table,
                                                  Tensor& token_idx, Tensor& gate_w, Tensor& offsets) {
  return Timed("MoeSortAssignments", [&] {
    return inner_->MoeSortAssignments(topk_idx, topk_w, token_rank, weight_table, token_idx, gate_w, offsets);
  });
}
absl::Status ProfilingBackend::GroupedMatmulInputGrad(const Tensor& dy, absl::Span<const GemmGroup> groups, Tensor& dx) {
  return Timed("GroupedMatmulInputGrad", [&] { return inner_->GroupedMatmulInputGrad(dy, groups, dx); });
}
absl::Status ProfilingBackend::GroupedMatmulWeightGrad(const Tensor& x, const Tensor& dy, absl::Span<const GemmGroup> groups) {
  return Timed("GroupedMatmulWeightGrad", [&] { return inner_->GroupedMatmulWeightGrad(x, dy, groups); });
}
absl::Status ProfilingBackend::GatherRows(const Tensor& src, const Tensor& idx, const Tensor* scale, Tensor& dst) {
  return Timed("GatherRows", [&] { return inner_->GatherRows(src, idx, scale, dst); });
}
absl::Status ProfilingBackend::ScatterAddRows(const Tensor& src, const Tensor& idx, const Tensor* scale, Tensor& dst) {
  return Timed("ScatterAddRows", [&] { return inner_->ScatterAddRows(src, idx, scale, dst); });
}
absl::Status ProfilingBackend::RowDotGather(const Tensor& a, const Tensor& b, const Tensor& idx, Tensor& out) {
  return Timed("RowDotGather", [&] { return inner_->RowDotGather(a, b, idx, out); });
}
absl::Status ProfilingBackend::EmbeddingForward(const Tensor& table, const Tensor& ids, Tensor& out) {
  return Timed("EmbeddingForward", [&] { return inner_->EmbeddingForward(table, ids, out); });
}
absl::Status ProfilingBackend::EmbeddingBackward(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  return Timed("EmbeddingBackward", [&] { return inner_->EmbeddingBackward(ids, dout, dtable); });
}
absl::Status ProfilingBackend::RmsNormForward(const Tensor& x, const Tensor& weight, float eps, Tensor& out, Tensor* rstd) {
  return Timed("RmsNormForward", [&] { return inner_->RmsNormForward(x, weight, eps, out, rstd); });
}
absl::Status ProfilingBackend::RmsNormBackward(const Tensor& x, const Tensor& weight, const Tensor& rstd,
                                               const Tensor& dout, Tensor& dx, Tensor* dweight) {
  return Timed("RmsNormBackward", [&] { return inner_->RmsNormBackward(x, weight, rstd, dout, dx, dweight); });
}
absl::Status ProfilingBackend::Rope(Tensor& x, const Tensor& positions, float theta, bool inverse) {
  return Timed("Rope", [&] { return inner_->Rope(x, positions, theta, inverse); });
}
absl::Status ProfilingBackend::AttentionForward(const Tensor& q, absl::Span<const AttentionSeq> seqs, float scale,
                                                Tensor& out, Tensor* lse) {
  return Timed("AttentionForward", [&] { return inner_->AttentionForward(q, seqs, scale, out, lse); });
}
absl::Status ProfilingBackend::AttentionBackward(const Tensor& q, absl::Span<const AttentionSeq> seqs, float scale,
                                                 const Tensor& out, const Tensor& lse, const Tensor& dout, Tensor& dq) {
  return Timed("AttentionBackward", [&] { return inner_->AttentionBackward(q, seqs, scale, out, lse, dout, dq); });
}
absl::Status ProfilingBackend::RouterForward(const Tensor& logits, int k, bool normalize, Tensor& probs,
                                             Tensor& topk_idx, Tensor& topk_w) {
  return Timed("RouterForward", [&] { return inner_->RouterForward(logits, k, normalize, probs, topk_idx, topk_w); });
}
absl::Status ProfilingBackend::RouterBackward(const Tensor& probs, const Tensor& topk_idx, const Tensor& topk_w,
                                              bool normalize, const Tensor& dtopk_w, Tensor& dlogits) {
  return Timed("RouterBackward", [&] { return inner_->RouterBackward(probs, topk_idx, topk_w, normalize, dtopk_w, dlogits); });
}
absl::Status ProfilingBackend::SwiGluForward(const Tensor& gate, const Tensor& up, Tensor& out) {
  return Timed("SwiGluForward", [&] { return inner_->SwiGluForward(gate, up, out); });
}
absl::Status ProfilingBackend::SwiGluBackward(const Tensor& gate, const Tensor& up, const Tensor& dout,
                                              Tensor& dgate, Tensor& dup) {
  return Timed("SwiGluBackward", [&] { return inner_->SwiGluBackward(gate, up, dout, dgate, dup); });
}
absl::Status ProfilingBackend::LogSoftmax(const Tensor& logits, Tensor& out) {
  return Timed("LogSoftmax", [&] { return inner_->LogSoftmax(logits, out); });
}
absl::Status ProfilingBackend::CrossEntropyForward(const Tensor& logits, const Tensor& targets, Tensor& loss, Tensor* lse) {
  return Timed("CrossEntropyForward", [&] { return inner_->CrossEntropyForward(logits, targets, loss, lse); });
}
absl::Status ProfilingBackend::CrossEntropyBackward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                                    const Tensor& dloss, Tensor& dlogits) {
  return Timed("CrossEntropyBackward", [&] { return inner_->CrossEntropyBackward(logits, targets, lse, dloss, dlogits); });
}
absl::Status ProfilingBackend::AdamW(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p) {
  return Timed("AdamW", [&] { return inner_->AdamW(param, grad, m, v, p); });
}

absl::Status ProfilingBackend::AdamWMany(absl::Span<const AdamWTensor> entries, const AdamWParams& p) {
  return Timed("AdamWMany", [&] { return inner_->AdamWMany(entries, p); });
}
}  // namespace tessera
