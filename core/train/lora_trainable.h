// LoraTrainable: LoRA on a tenant's expert slots as a TrainableLm (method "lora").
//
// Math: each trained slot's matrix W [out, in] (gate, up: [F, D]; down: [D, F]) is
//     W' = W0 + s B A,   s = alpha / r,   A [r, in], B [out, r]
// with W0 frozen (the start adapter's carried dense slot, else the backbone's expert; lora_overlay.h).
// Only A and B are parameters. Initialisation (as PEFT's default): A ~ U(-1/sqrt(in), 1/sqrt(in)) from
// the seed (per slot and part, so a slot's init does not depend on which other slots are trained),
// B = 0 -- so at step 0 W' == W0 bitwise and the model computes exactly the starting version's function.
// A slot the start adapter already has factors for continues from them (same rank required).
//
// Forward/backward: W' is materialised per Forward (MergeLoraPart: the serving merge, so what is
// trained is bitwise what a loaded version serves) into the working overlay's slot tensors, and the
// model's own expert-slot backward gives dL/dW' (Gradients in slots mode, zeroed per Backward); then
//     dA += s B^T dW'      dB += s dW' A^T
// (the chain rule through W' = W0 + s B A; two Matmuls with beta 1, so micro-batches accumulate).
// Why materialise rather than run the low-rank path per token group (x A^T B^T next to x W0^T): it
// reuses the model's expert forward/backward unchanged, and per part it costs a merge of 2 r in out
// FLOPs plus the dW' GEMM (2 M in out for the M tokens routed to the slot) plus 4 r in out for the chain,
// against 8 M r (in + out) extra for the per-token path. The per-token path wins once
// in*out / (in + out) > 4 r roughly (d_model-sized experts with small r: F = D = 2048, r = 8 -> 1024 > 32)
// -- then it would also drop the dW' buffer below; for the expert sizes Tessera trains on the CPU
// (builtin:tiny) materialising is the cheaper one, and on any size it is the simple exact one.
//
// Memory contract (per trained slot; P = in*out per part, three parts): A, B and their f32 gradients,
// AdamW m and v: 4 * 3 r (in + out) floats; plus the working W' (3 P in the model's dtype) and dW'
// (3 P f32, one flat buffer). Versus expert-only training (W', dW', m, v and for bf16 an f32 master:
// 4-5 x 3 P) that is about half the memory, and the version's bytes are 3 r (in + out) * 4 per slot.
// The backbone and the start adapter are never written.
#pragma once

#include <array>
#include <map>
#include <memory>
#include <vector>

#include "core/model/lora_overlay.h"
#include "core/model/model.h"
#include "core/train/trainable.h"

namespace tessera::train {

struct LoraOptions {
  int64_t rank = 8;
  double alpha = 16;  // scale alpha / rank = 2 at the default rank
  uint64_t seed = 0;  // A's initialisation
};

class LoraTrainable : public TrainableLm {
 public:
  // `start`: the version training continues from as an adapter (LoraAdapter::Parse of a LoRA version,
  // FromDenseOverlay of an expert-only one, or empty): its dense slots are W0 of those slots and are
  // carried; its factors initialise the trained slots that have them and are carried for the others.
  // INVALID_ARGUMENT for a bad/duplicate slot, rank < 1 or a rank other than start's (when it has factors).
  static absl::StatusOr<std::unique_ptr<LoraTrainable>> Create(const Model* model, const LoraAdapter& start,
                                                               std::vector<SlotId> trainable,
                                                               const LoraOptions& options);

  Backend& backend() override { return *model_->backend(); }
  int64_t vocab_size() const override { return model_->config().vocab_size; }
  absl::StatusOr<Tensor> Forward(absl::Span<const std::vector<int32_t>> seqs, bool training) override;
  absl::Status Backward(const Tensor& dlogits) override;
  std::vector<TrainParam> Parameters() override { return params_; }
  Tensor FlatGradients() override { return flat_grad_; }
  DType LogitsGradDtype() const override { return model_->weights().matrix_dtype(); }

  // The working overlay with W' merged from the current A and B (carried slots as loaded): what the
  // version serves. Re-merges (the trainer may have changed A, B since the last Forward).
  absl::StatusOr<std::shared_ptr<const ExpertOverlay>> MergedOverlay();

  // Forward and Backward in parts, for a caller that runs the model itself over a batch shared with
  // other jobs (joint_trainer.h); Forward and Backward are these around the model's own passes.
  // Before a forward: merges W' and returns the overlay to run this job's sequences with.
  absl::StatusOr<const ExpertOverlay*> PrepareForward();
  // Before a backward: dL/dW' buffers for the model's backward, zeroed; their owner is the working
  // overlay, so in a shared batch they sum this job's rows only.
  absl::StatusOr<Gradients*> PrepareBackward();
  // After it: dA += s B^T dW', dB += s dW' A^T.
  absl::Status FinishBackward();
  // The version's content: start's dense slots and carried factors, the trained slots' current A and B.
  absl::StatusOr<LoraAdapter> Adapter() const;
  const std::vector<SlotId>& trainable_slots() const { return trainable_; }
  const LoraOptions& options() const { return options_; }
  float scale() const { return static_cast<float>(options_.alpha / static_cast<double>(options_.rank)); }

 private:
  LoraTrainable() = default;
  absl::Status Merge();

  struct SlotState {
    std::array<Tensor, 3> w0;  // frozen starting weights (model dtype or f32)
    std::array<Tensor, 3> a, b, grad_a, grad_b;
  };
  const Model* model_ = nullptr;
  LoraOptions options_;
  LoraAdapter start_;
  std::vector<SlotId> trainable_;
  std::map<SlotId, SlotState> state_;
  std::shared_ptr<const ExpertOverlay> overlay_;  // trained slots' W' rewritten by Merge; carried slots fixed
  Gradients dense_;                               // dL/dW' of the trained slots
  Tensor flat_grad_;                              // every grad_a / grad_b is a view of it
  Tensor staging_;                                // f32, one part
  std::vector<TrainParam> params_;
  ForwardResult last_;
  bool last_training_ = false;
};

}  // namespace tessera::train
