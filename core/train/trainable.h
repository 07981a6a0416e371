// TrainableLm: what the Trainer needs from a language model, and nothing more.
//
// The Trainer owns the loss (cross-entropy over the vocabulary, masked), the optimizer and the data
// order; the model owns its forward/backward. Keeping this boundary an interface lets the trainer's
// mechanics (schedule, clipping, accumulation, checkpoints, resume) be tested on a two-matrix model,
// and lets the same trainer drive expert-only fine-tuning and full-parameter pretraining of the MoE
// model (ModelTrainable in model_trainable.h).
//
// Contract:
//  - Forward(seqs, training) runs the model over a batch of independent sequences and returns logits
//    [sum of lengths, vocab] with sequence i's rows following sequence i-1's. With training == true it
//    keeps what Backward needs until the next Forward.
//  - Backward(dlogits) (dlogits in LogitsGradDtype()) ACCUMULATES d(loss)/d(param) into each trainable parameter's `grad` (the trainer
//    zeroes them at the start of each optimizer step), for the last training Forward.
//  - Parameters() lists the trainable parameters only; frozen weights have no grad buffer at all. The
//    tensors are views of the model's own storage: the optimizer updates `value` in place. The list
//    (names, shapes, order) is stable for the model's lifetime.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/backend/backend.h"
#include "core/tensor/tensor.h"

namespace tessera::train {

struct TrainParam {
  std::string name;  // unique, stable (HF tensor name where there is one)
  Tensor value;      // f32 or bf16 (the model's weights), on backend(); the trainer updates it in place
  Tensor grad;       // f32, same shape
  bool decay = true; // AdamW weight decay applies (false for norms and 1-D gains)
};

class TrainableLm {
 public:
  virtual ~TrainableLm() = default;
  virtual Backend& backend() = 0;
  virtual int64_t vocab_size() const = 0;
  virtual absl::StatusOr<Tensor> Forward(absl::Span<const std::vector<int32_t>> seqs,
                                         bool training) = 0;
  virtual absl::Status Backward(const Tensor& dlogits) = 0;
  virtual std::vector<TrainParam> Parameters() = 0;
  // Optional: one f32 tensor holding every Parameters() gradient (they are views of it) and otherwise only
  // zeros, so the trainer zeroes, measures and clips them with one op each instead of one per parameter.
  // Undefined (the default) when the gradients are separate allocations.
  virtual Tensor FlatGradients() { return Tensor(); }
  // The dtype Backward takes dlogits in: a model whose GEMMs take bf16 operands takes them in bf16, so the
  // trainer's cross-entropy backward writes that directly (no f32 [tokens, vocab] buffer and no
  // conversion pass: 2.5 GB and a read/write of it per step at 4096 tokens and a 152k vocabulary).
  virtual DType LogitsGradDtype() const { return DType::kF32; }
};

}  // namespace tessera::train
