// JointGroup: several jobs' expert fine-tunes (full slot weights, or LoRA factors on the slots) on one
// backbone, trained in one loop (mLoRA's idea, for expert slots): each forward and backward of the
// backbone runs once over the union of the jobs' batches, and every job's gradients come from its own rows
// only.
//
// How: each job runs its own, unchanged Trainer (its options, schedule, data order, optimizer,
// validation, early stopping, best checkpoint, checkpoints/resume and progress) on its own thread, over a
// JointMember: a TrainableLm whose Forward/Backward do not compute but submit a request to the group and
// wait. When every member of the group is waiting, the last one to arrive runs a "round" for all of them:
//   1. the pending Backwards, per forward they belong to: dlogits = the members' dlogits stacked in that
//      forward's row order (zero rows for a member that left), one Model::BackwardFromLogits with every
//      member's Gradients (each with `owner` = its overlay, so a slot gradient only sums assignments served
//      by that job's own copy: two jobs may train the same (layer, expert) id, each gets its own rows);
//   2. the pending training Forwards as one Model::Forward (save_activations), each sequence carrying its
//      job's overlay; each member receives a view of its rows of the logits;
//   3. the pending evaluation Forwards as one Model::Forward without saved activations.
// When both backwards and forwards are pending, a round runs only the backwards (never two rounds in a
// row), so members out of phase realign and the next round's forward pools them all.
// A job's loss is normalised by its own target count (its Trainer computes its own cross-entropy and
// dlogits), sequences are independent in the forward (per-sequence attention, per-token routing) and the
// gradient of a job's slots only sums its own rows, so a job's losses and gradients in a joint step equal
// its solo step's (up to float summation order in the GEMMs).
//
// Scheduling ("turns"): at most one member thread runs outside a round at a time; a member holds the turn
// from Join until it waits in a request, and again from being served until its next request or Leave. So
// a member's own work between requests (cross-entropy, clipping, AdamW, checkpoints, selection, the
// caller's evaluation) never runs concurrently with another member's or with a round, and all of it may
// use the group's backend. Members join and leave at any time: a new member takes part in the next round;
// a member that returns (finished, cancelled, failed) leaves when its JointMember is destroyed and the
// others go on (a pending backward of a forward it shared gets zero dlogits for its rows).
// Errors: a member's own bad request (a token outside the vocabulary) fails only that member (checked
// before it is pooled); when a pooled forward fails (e.g. out of memory), each member's part is retried
// alone so only a member whose own part fails gets the error. A failing backward fails the members in it.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/model.h"
#include "core/model/overlay.h"
#include "core/train/lora_trainable.h"
#include "core/train/model_trainable.h"
#include "core/train/trainable.h"

namespace tessera::train {

class JointMember;

class JointGroup : public std::enable_shared_from_this<JointGroup> {
 public:
  struct Stats {
    int64_t joined = 0;           // Join calls so far (members that left included)
    int64_t rounds = 0;
    int64_t forward_passes = 0;   // Model::Forward calls (pooled or retried alone)
    int64_t backward_passes = 0;  // Model::BackwardFromLogits calls
    int64_t max_members_in_pass = 0;  // the most jobs one pass served
  };

  // `model` (the shared backbone on the backend every member uses) must outlive the group and members.
  static std::shared_ptr<JointGroup> Create(const Model* model);

  // Blocks until the caller holds the turn (see the file comment); the member keeps the group alive.
  // The trainable part (SetTrainable) may come later, e.g. after the job's expert selection.
  std::unique_ptr<JointMember> Join();

  const Model& model() const { return *model_; }
  int members() const;
  Stats stats() const;

 private:
  friend class JointMember;
  enum class State { kWaitingTurn, kRunning, kPending, kServed };
  struct ForwardRecord;  // one executed forward pass and each member's rows in it
  struct Request {
    bool backward = false;
    bool training = false;
    absl::Span<const std::vector<int32_t>> seqs;   // forward
    const Tensor* dlogits = nullptr;               // backward
    std::shared_ptr<ForwardRecord> record;         // backward: the forward it belongs to
    // Result.
    absl::Status status;
    Tensor logits;
    std::shared_ptr<ForwardRecord> result_record;
  };
  struct Slot {  // a member's scheduling state, under mu_
    JointMember* member = nullptr;
    State state = State::kWaitingTurn;
    Request* request = nullptr;
  };

  explicit JointGroup(const Model* model) : model_(model) {}
  // Called by a member with the turn: submits, runs the round if everyone waits, returns once served and
  // holding the turn again.
  absl::Status Submit(JointMember* m, Request* r);
  void Leave(JointMember* m);
  // With mu_ held and every member pending: takes their requests, runs the round without mu_ (the turn
  // keeps others out), and marks them served.
  void RunRoundLocked(std::unique_lock<std::mutex>& lock);
  void RunBackwards(std::vector<Slot*>& slots);
  void RunForwards(std::vector<Slot*>& slots, bool training);
  bool AllPendingLocked() const;
  Slot* FindLocked(JointMember* m);

  const Model* model_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::list<Slot> slots_;  // stable addresses: a round holds pointers while members join
  bool turn_taken_ = false;
  bool deferred_last_round_ = false;  // the last round left pending forwards for the next (alignment)
  Stats stats_;
};

// One job in a JointGroup, as the TrainableLm its Trainer runs on. Parameters, gradients and the overlay
// are those of a ModelTrainable::ForExperts over the same model (SetTrainable), or of a LoraTrainable
// (SetLora: LoRA factors on the job's slots; the member merges W' before each of its forwards and turns
// dL/dW' into the factors' gradients after each backward, both in its own turn), so checkpoints, names
// and sizes match a solo run's. Destroying it leaves the group (and gives up the turn).
class JointMember : public TrainableLm {
 public:
  ~JointMember() override;
  JointMember(const JointMember&) = delete;
  JointMember& operator=(const JointMember&) = delete;

  // The job's training overlay and its trainable slots (ModelTrainable::ForExperts' rules); once.
  absl::Status SetTrainable(std::shared_ptr<const ExpertOverlay> overlay, std::vector<SlotId> trainable);
  // Or the job's LoRA trainable, created over the group's model; once (either this or SetTrainable).
  absl::Status SetLora(std::unique_ptr<LoraTrainable> lora);

  Backend& backend() override { return *group_->model_->backend(); }
  int64_t vocab_size() const override { return group_->model_->config().vocab_size; }
  absl::StatusOr<Tensor> Forward(absl::Span<const std::vector<int32_t>> seqs, bool training) override;
  absl::Status Backward(const Tensor& dlogits) override;
  std::vector<TrainParam> Parameters() override;
  Tensor FlatGradients() override;
  DType LogitsGradDtype() const override { return group_->model_->weights().matrix_dtype(); }

  const ModelTrainable* trainable() const { return inner_.get(); }
  LoraTrainable* lora() { return lora_.get(); }
  JointGroup& group() { return *group_; }

 private:
  friend class JointGroup;
  explicit JointMember(std::shared_ptr<JointGroup> group) : group_(std::move(group)) {}
  bool has_trainable() const { return inner_ != nullptr || lora_ != nullptr; }

  std::shared_ptr<JointGroup> group_;
  std::unique_ptr<ModelTrainable> inner_;  // expert slots, or
  std::unique_ptr<LoraTrainable> lora_;    // LoRA factors on them
  // What the next round runs this member with: its overlay (forward), its gradients (backward).
  const ExpertOverlay* forward_overlay_ = nullptr;
  Gradients* backward_gradients_ = nullptr;
  std::shared_ptr<JointGroup::ForwardRecord> last_;
  bool last_training_ = false;
};

}  // namespace tessera::train
