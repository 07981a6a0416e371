// ModelTrainable: the MoE Model (core/model) as a TrainableLm, in one of two modes.
//
//  - Experts: fine-tuning a tenant overlay. Every sequence runs with `overlay` (the tenant's working
//    copy: its trainable slots start as copies of the base experts or of a previous version, and it
//    may also hold frozen slots carried from that version). Only the `trainable` slots get gradient
//    buffers and are handed to the optimizer; the backbone is read-only (const Model&) and so are the
//    overlay's other slots. The optimizer updates the overlay's tensors in place (this object is the
//    overlay's only user while training).
//  - AllParameters: pretraining / full fine-tuning; every weight of the model is trainable and
//    updated in place (the model must not be shared while training).
// Parameter names are the HF tensor names, so checkpoints and results use the same names as the
// backbone. Weight decay applies to matrices (rank >= 2), not to norm gains.
#pragma once

#include <memory>
#include <vector>

#include "core/model/model.h"
#include "core/model/overlay.h"
#include "core/train/trainable.h"

namespace tessera::train {

class ModelTrainable : public TrainableLm {
 public:
  // INVALID_ARGUMENT when a trainable slot is out of range, duplicated, or not held by `overlay`.
  static absl::StatusOr<std::unique_ptr<ModelTrainable>> ForExperts(
      const Model* model, std::shared_ptr<const ExpertOverlay> overlay, std::vector<SlotId> trainable);
  static absl::StatusOr<std::unique_ptr<ModelTrainable>> ForAllParameters(Model* model);

  Backend& backend() override { return *model_->backend(); }
  int64_t vocab_size() const override { return model_->config().vocab_size; }
  absl::StatusOr<Tensor> Forward(absl::Span<const std::vector<int32_t>> seqs, bool training) override;
  absl::Status Backward(const Tensor& dlogits) override;
  std::vector<TrainParam> Parameters() override { return params_; }
  Tensor FlatGradients() override { return grads_.flat; }  // experts mode; undefined for all parameters
  DType LogitsGradDtype() const override { return model_->weights().matrix_dtype(); }

  const std::shared_ptr<const ExpertOverlay>& overlay() const { return overlay_; }
  const std::vector<SlotId>& trainable_slots() const { return trainable_; }
  int64_t gradient_bytes() const;
  // The gradient buffers Backward accumulates into (experts mode: owner = the overlay), for a caller that
  // runs the model's backward itself over a batch shared with other jobs (joint_trainer.h).
  Gradients* mutable_gradients() { return &grads_; }

 private:
  ModelTrainable() = default;

  const Model* model_ = nullptr;
  std::shared_ptr<const ExpertOverlay> overlay_;
  std::vector<SlotId> trainable_;
  Gradients grads_;
  std::vector<TrainParam> params_;
  ForwardResult last_;
  bool last_training_ = false;
};

}  // namespace tessera::train
