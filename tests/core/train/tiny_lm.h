// TinyLm: a two-matrix language model for trainer tests (logits = embed[token] @ out^T), with an
// exact backward. Small enough that the trainer's mechanics are tested in milliseconds. With
// param_dtype = bf16 its weights are stored in bf16 (as a GPU model's are) and read as f32 copies, so
// the trainer's mixed-precision path runs on the CPU backend too.
#pragma once

#include <vector>

#include "core/backend/backend.h"
#include "core/data/rng.h"
#include "core/train/trainable.h"
#include "core/util/status_macros.h"

namespace tessera::train::testing {

class TinyLm : public TrainableLm {
 public:
  TinyLm(Backend* be, int64_t vocab, int64_t dim, uint64_t seed, DType param_dtype = DType::kF32)
      : be_(be), vocab_(vocab) {
    data::Rng rng(seed);
    std::vector<float> e(vocab * dim), o(vocab * dim);
    for (float& x : e) x = static_cast<float>(rng.Double() - 0.5);
    for (float& x : o) x = static_cast<float>(rng.Double() - 0.5);
    embed_ = *be->Alloc({vocab, dim}, param_dtype);
    out_ = *be->Alloc({vocab, dim}, param_dtype);
    (void)be->Copy(*be->FromHost(e, {vocab, dim}), embed_);
    (void)be->Copy(*be->FromHost(o, {vocab, dim}), out_);
    dembed_ = *be->Zeros({vocab, dim});
    dout_ = *be->Zeros({vocab, dim});
  }
  Backend& backend() override { return *be_; }
  int64_t vocab_size() const override { return vocab_; }
  absl::StatusOr<Tensor> Forward(absl::Span<const std::vector<int32_t>> seqs, bool) override {
    std::vector<int32_t> flat;
    for (const auto& s : seqs) flat.insert(flat.end(), s.begin(), s.end());
    const int64_t n = static_cast<int64_t>(flat.size());
    ASSIGN_OR_RETURN(ids_, be_->FromHost(flat, {n}));
    ASSIGN_OR_RETURN(h_, be_->Alloc({n, embed_.dim(1)}, DType::kF32));
    ASSIGN_OR_RETURN(Tensor embed, AsF32(embed_));
    RETURN_IF_ERROR(be_->EmbeddingForward(embed, ids_, h_));
    ASSIGN_OR_RETURN(Tensor logits, be_->Alloc({n, vocab_}, DType::kF32));
    ASSIGN_OR_RETURN(Tensor out, AsF32(out_));
    RETURN_IF_ERROR(be_->Matmul(h_, false, out, true, logits));
    if (poison_) RETURN_IF_ERROR(be_->Fill(logits, std::numeric_limits<float>::quiet_NaN()));
    return logits;
  }
  absl::Status Backward(const Tensor& dlogits) override {
    RETURN_IF_ERROR(be_->Matmul(dlogits, true, h_, false, dout_, 1.0f, 1.0f));
    ASSIGN_OR_RETURN(Tensor dh, be_->Alloc(h_.shape(), DType::kF32));
    ASSIGN_OR_RETURN(Tensor out, AsF32(out_));
    RETURN_IF_ERROR(be_->Matmul(dlogits, false, out, false, dh));
    return be_->EmbeddingBackward(ids_, dh, dembed_);
  }
  std::vector<TrainParam> Parameters() override {
    return {{"embed", embed_, dembed_, true}, {"out", out_, dout_, true}};
  }
  void set_poison(bool p) { poison_ = p; }
  std::vector<float> Values() {
    auto a = *be_->ToHostF32(embed_);
    auto b = *be_->ToHostF32(out_);
    a.insert(a.end(), b.begin(), b.end());
    return a;
  }

 private:
  absl::StatusOr<Tensor> AsF32(const Tensor& t) {
    if (t.dtype() == DType::kF32) return t;
    ASSIGN_OR_RETURN(Tensor f, be_->Alloc(t.shape(), DType::kF32));
    RETURN_IF_ERROR(be_->Copy(t, f));
    return f;
  }

  Backend* be_;
  int64_t vocab_;
  Tensor embed_, out_, dembed_, dout_, ids_, h_;
  bool poison_ = false;
};

}  // namespace tessera::train::testing
