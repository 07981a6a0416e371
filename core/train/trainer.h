// Trainer: the optimization loop shared by fine-tuning (expert slots) and pretraining (all
// parameters), over any TrainableLm (trainable.h).
//
// One optimizer step (1-based `step`):
//   1. take batch_size examples from the DataOrder, split into grad_accum_steps micro-batches;
//   2. per micro-batch: logits = Forward; loss_r = CE(logits_r, target_r) per row; backward of
//      sum_r loss_r / T, where T counts the targets of the WHOLE step (so accumulation gives exactly
//      the gradient of the step's mean loss, whatever the micro-batch split);
//   3. global-norm clipping (grad_clip.h); the step's loss or the gradient norm not finite ->
//      FAILED_PRECONDITION "... at step N", before any parameter is touched;
//   4. AdamW (the backend op) with lr from LrSchedule; weight decay only on parameters with
//      decay == true (matrices), decoupled (lr * wd * param).
// Every `eval_every` steps and after the last step: validation loss (mean CE over the targets of the
// validation examples, at most eval_max_examples of them). The validation set is the one given, or a
// held-out split of the training examples (validation_fraction, chosen by the seed).
//
// Early stopping and the best checkpoint: every validation (the one before step 1 included) is
// compared with the best so far; a loss below best * (1 - early_stopping_min_delta) is a new best (with
// restore_best, a device copy of the trainable parameters is kept). early_stopping_patience > 0:
// that many validations in a row without a new best end the run (finished, stopped_early). With
// restore_best, the parameters at the end of the run (finished or stopped) are the best validation's
// (the starting point's when no step improved on it), and final_val_loss is that loss. The tracking
// (best step and loss, validations since, whether a plateau stopped the run) and, with restore_best,
// the best parameters' snapshot are saved in the checkpoint, so a run stopped and resumed ends with the
// same parameters as an uninterrupted one (a checkpoint of an older build without them: the tracking
// starts anew from the resumed parameters).
//
// Determinism: the data order, the split and every op are fixed by the seed, so two runs with the
// same inputs produce bitwise-identical losses on the CPU backend. A checkpoint (SaveCheckpoint)
// holds the trainable parameters, AdamW m/v, the step, the data order's state (RNG + position), the
// losses so far and the best-validation state above (written atomically, in one file); RestoreCheckpoint into a fresh Trainer over the same model and data continues
// exactly as if never stopped.
//
// Memory: two optimizer moments per trainable element (frozen weights have no state).
#pragma once

#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/data/tokenized_example.h"
#include "core/train/data_order.h"
#include "core/train/lm_batch.h"
#include "core/train/schedule.h"
#include "core/train/adamw_state.h"
#include "core/train/trainable.h"

namespace tessera::train {

struct TrainerOptions {
  int64_t max_steps = 100;
  int64_t batch_size = 16;        // examples per optimizer step
  int64_t grad_accum_steps = 1;   // micro-batches per step (batch_size is split as evenly as possible)
  int64_t seq_len = 256;          // examples are truncated to this many tokens
  double learning_rate = 1e-3;
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.1;      // cosine floor, as a fraction of learning_rate
  double weight_decay = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double adam_eps = 1e-8;
  double max_grad_norm = 1.0;     // <= 0: no clipping
  uint64_t seed = 0;
  int64_t eval_every = 0;         // 0: validate only after the last step
  int64_t eval_max_examples = 256;
  double validation_fraction = 0.1;  // held-out split when no validation set is given
  int64_t early_stopping_patience = 0;   // validations without a new best that end the run; 0: off
  double early_stopping_min_delta = 0.0; // relative improvement needed for a new best
  bool restore_best = false;             // end with the best validation's parameters

  absl::Status Validate() const;
};

struct TrainProgress {
  int64_t step = 0;
  int64_t max_steps = 0;
  double loss = 0.0;  // this step's mean training loss
  double val_loss = std::numeric_limits<double>::quiet_NaN();  // NaN unless validated at this step
  double learning_rate = 0.0;
  double grad_norm = 0.0;  // before clipping
  double tokens_per_second = 0.0;
  double eta_seconds = 0.0;
  int64_t tokens_seen = 0;  // input tokens processed by this trainer (across resumes)
};

struct RunControls {
  const std::atomic<bool>* cancel = nullptr;  // checked between steps: set -> CANCELLED
  std::function<void(const TrainProgress&)> on_progress;  // after every step
  int64_t stop_after_step = 0;  // > 0: return OK after this step (the run can be resumed)
};

struct TrainResult {
  int64_t steps = 0;  // optimizer steps done so far (== max_steps when finished)
  bool finished = false;
  double final_train_loss = std::numeric_limits<double>::quiet_NaN();
  double initial_val_loss = std::numeric_limits<double>::quiet_NaN();  // before step 1
  double final_val_loss = std::numeric_limits<double>::quiet_NaN();
  double wall_seconds = 0.0;  // of this Run call
  int64_t tokens = 0;         // input tokens processed in this Run call
  int64_t trainable_parameters = 0;
  bool stopped_early = false;  // a validation plateau ended the run before max_steps
  int64_t best_step = 0;       // step of the lowest validation loss (0 = before training)
  double best_val_loss = std::numeric_limits<double>::quiet_NaN();
};

class Trainer {
 public:
  Trainer(const Trainer&) = delete;  // grad_buffers_ points into the object itself
  Trainer& operator=(const Trainer&) = delete;
  // `model` must outlive the Trainer. `validation` empty: held out from `train`. INVALID_ARGUMENT for
  // bad options, an empty training set, or parameters without gradients.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(TrainableLm* model,
                                                          std::vector<data::TokenizedExample> train,
                                                          std::vector<data::TokenizedExample> validation,
                                                          const TrainerOptions& options);

  // Runs steps until max_steps (or stop_after_step / cancellation). May be called again to continue.
  // Errors: CANCELLED "cancelled after step N"; FAILED_PRECONDITION for non-finite loss/gradient
  // naming the step (the parameters are left as they were after the previous step).
  absl::StatusOr<TrainResult> Run(const RunControls& controls = {});

  // Mean CE over the targets of `examples` (no gradients), EvaluationRows() examples per forward.
  absl::StatusOr<double> EvaluateLoss(const std::vector<data::TokenizedExample>& examples);
  absl::StatusOr<double> ValidationLoss() { return EvaluateLoss(validation_); }

  // Crash-safe write of the full training state (safetensors; see the file comment).
  absl::Status SaveCheckpoint(const std::string& path) const;
  // FAILED_PRECONDITION when the checkpoint belongs to other options, data or parameters.
  absl::Status RestoreCheckpoint(const std::string& path);

  int64_t step() const { return step_; }
  const std::vector<double>& losses() const { return losses_; }   // per step, index = step - 1
  const std::vector<double>& val_losses() const { return val_losses_; }
  int64_t trainable_parameters() const;
  int64_t optimizer_state_bytes() const;
  const std::vector<data::TokenizedExample>& validation_set() const { return validation_; }
  const TrainerOptions& options() const { return options_; }

  // Examples per evaluation forward for a training micro-batch of `micro_batch` examples. An evaluation
  // forward keeps no activations for a backward, so it takes twice the micro-batch at no more memory than
  // a training step (its logits are the size of the step's logits plus their gradient); and, where a
  // whole chunk's logits stay under kEvalLogitsBytes (small vocabularies), up to kMaxEvalRows. On
  // builtin:tiny at batch 2, validating 100 examples two at a time took longer than the training steps
  // between validations; the loss is the same sum over the same targets whatever the chunk.
  static constexpr int64_t kEvalLogitsBytes = int64_t{64} << 20;
  static constexpr int64_t kMaxEvalRows = 32;
  static int64_t EvaluationRows(int64_t micro_batch, int64_t seq_len, int64_t vocab_size);

 private:
  Trainer() = default;
  absl::StatusOr<double> Step(double* grad_norm, int64_t* tokens);
  std::string Fingerprint() const;

  TrainableLm* model_ = nullptr;
  TrainerOptions options_;
  LrSchedule schedule_;
  std::vector<data::TokenizedExample> train_, validation_;
  std::unique_ptr<DataOrder> order_;
  std::vector<TrainParam> params_;
  // What holds every gradient, zeroed and clipped each step: the model's FlatGradients() alone when it has
  // one (one op each), else each parameter's grad. Points into params_ (fixed after Create) or flat_grad_.
  Tensor flat_grad_;
  std::vector<Tensor*> grad_buffers_;
  std::vector<AdamWState> opt_;  // per parameter (with an f32 master for bf16 parameters)
  int64_t step_ = 0;
  int64_t tokens_seen_ = 0;
  double initial_val_loss_ = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> losses_;
  std::vector<double> val_losses_;  // NaN where not validated
  // Early stopping / best checkpoint (see the file comment).
  absl::Status ObserveValidation(double val_loss);
  absl::Status RestoreBest();
  double best_val_ = std::numeric_limits<double>::quiet_NaN();
  int64_t best_step_ = -1;        // -1: nothing observed yet
  int64_t evals_since_best_ = 0;
  bool stopped_early_ = false;
  std::vector<Tensor> best_params_;  // restore_best: copies of params_[i].value at best_step_
};

}  // namespace tessera::train
