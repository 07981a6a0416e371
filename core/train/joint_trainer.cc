#include "core/train/joint_trainer.h"

#include <algorithm>
#include <list>

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"

namespace tessera::train {

// One executed forward pass: its result (activations when it was a training pass) and which member owns
// which rows of it, in row order.
struct JointGroup::ForwardRecord {
  ForwardResult result;
  struct Part {
    const JointMember* member;
    int64_t row_begin;
    int64_t rows;
  };
  std::vector<Part> parts;
};

std::shared_ptr<JointGroup> JointGroup::Create(const Model* model) {
  return std::shared_ptr<JointGroup>(new JointGroup(model));
}

std::unique_ptr<JointMember> JointGroup::Join() {
  std::unique_ptr<JointMember> m(new JointMember(shared_from_this()));
  std::unique_lock<std::mutex> lock(mu_);
  slots_.push_back(Slot{m.get(), State::kWaitingTurn, nullptr});
  ++stats_.joined;
  Slot* me = &slots_.back();
  cv_.wait(lock, [&] { return !turn_taken_; });
  turn_taken_ = true;
  me->state = State::kRunning;
  return m;
}

int JointGroup::members() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(slots_.size());
}

JointGroup::Stats JointGroup::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

JointGroup::Slot* JointGroup::FindLocked(JointMember* m) {
  for (Slot& s : slots_) {
    if (s.member == m) return &s;
  }
  return nullptr;
}

bool JointGroup::AllPendingLocked() const {
  if (slots_.empty()) return false;
  for (const Slot& s : slots_) {
    if (s.state != State::kPending) return false;
  }
  return true;
}

absl::Status JointGroup::Submit(JointMember* m, Request* r) {
  std::unique_lock<std::mutex> lock(mu_);
  Slot* me = FindLocked(m);
  if (me == nullptr || me->state != State::kRunning) {
    return absl::InternalError("JointGroup: a request from a member that does not hold the turn");
  }
  me->request = r;
  me->state = State::kPending;
  if (AllPendingLocked()) {
    RunRoundLocked(lock);  // keeps the turn through the round, frees it after
  } else {
    turn_taken_ = false;
    cv_.notify_all();  // a served or newly joined member may run now
  }
  cv_.wait(lock, [&] { return me->state == State::kServed && !turn_taken_; });
  turn_taken_ = true;
  me->state = State::kRunning;
  me->request = nullptr;
  return r->status;
}

void JointGroup::Leave(JointMember* m) {
  std::unique_lock<std::mutex> lock(mu_);
  slots_.remove_if([&](const Slot& s) { return s.member == m; });
  // The leaver held the turn; if everyone left is waiting in a request, their round is due now.
  if (AllPendingLocked()) {
    RunRoundLocked(lock);
  } else {
    turn_taken_ = false;
    cv_.notify_all();
  }
}

void JointGroup::RunRoundLocked(std::unique_lock<std::mutex>& lock) {
  turn_taken_ = true;  // held by this round: no member runs, a joiner waits
  std::vector<Slot*> backward, train_fwd, eval_fwd;
  for (Slot& s : slots_) {
    (s.request->backward ? backward : s.request->training ? train_fwd : eval_fwd).push_back(&s);
  }
  // Alignment: with backwards and forwards both pending, this round runs only the backwards and the
  // forwards wait one round, so the members that just finished their backward join the next pooled
  // forward (otherwise jobs out of phase -- one in its forward while another is in its backward -- would
  // stay out of phase and every round would run two half-empty passes). Never twice in a row.
  const bool defer = !backward.empty() && !(train_fwd.empty() && eval_fwd.empty()) && !deferred_last_round_;
  deferred_last_round_ = defer;
  if (defer) {
    train_fwd.clear();
    eval_fwd.clear();
  }
  lock.unlock();
  // Backwards first: they free the previous forward's activations before the next forward allocates.
  RunBackwards(backward);
  RunForwards(train_fwd, /*training=*/true);
  RunForwards(eval_fwd, /*training=*/false);
  lock.lock();
  ++stats_.rounds;
  for (std::vector<Slot*>* group : {&backward, &train_fwd, &eval_fwd}) {
    for (Slot* s : *group) s->state = State::kServed;
  }
  turn_taken_ = false;
  cv_.notify_all();
}

void JointGroup::RunForwards(std::vector<Slot*>& slots, bool training) {
  if (slots.empty()) return;
  std::vector<SequenceInput> batch;
  std::vector<std::pair<int64_t, int64_t>> rows;  // per slot: first row, row count
  int64_t row = 0;
  for (Slot* s : slots) {
    const ExpertOverlay* overlay = s->member->forward_overlay_;
    int64_t n = 0;
    for (const std::vector<int32_t>& seq : s->request->seqs) {
      batch.push_back({absl::MakeConstSpan(seq), overlay, nullptr});
      n += static_cast<int64_t>(seq.size());
    }
    rows.push_back({row, n});
    row += n;
  }
  ForwardOptions opt;
  opt.logits = LogitsMode::kAll;
  opt.save_activations = training;
  absl::StatusOr<ForwardResult> result = model_->Forward(batch, opt);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.forward_passes;
    stats_.max_members_in_pass = std::max<int64_t>(stats_.max_members_in_pass, slots.size());
  }
  if (!result.ok()) {
    if (slots.size() == 1) {
      slots[0]->request->status = result.status();
      return;
    }
    // Retry each member's part alone, so only a member whose own part fails gets an error.
    for (Slot* s : slots) {
      std::vector<Slot*> alone = {s};
      RunForwards(alone, training);
    }
    return;
  }
  auto record = std::make_shared<ForwardRecord>();
  record->result = *std::move(result);
  for (size_t i = 0; i < slots.size(); ++i) {
    record->parts.push_back({slots[i]->member, rows[i].first, rows[i].second});
  }
  for (size_t i = 0; i < slots.size(); ++i) {
    Request* r = slots[i]->request;
    r->status = absl::OkStatus();
    r->logits = record->result.logits.Rows(rows[i].first, rows[i].second);
    r->result_record = record;
  }
}

void JointGroup::RunBackwards(std::vector<Slot*>& slots) {
  // The pending backwards, by the forward they belong to (in order of first appearance).
  std::vector<std::pair<ForwardRecord*, std::vector<Slot*>>> by_record;
  for (Slot* s : slots) {
    ForwardRecord* rec = s->request->record.get();
    auto it = std::find_if(by_record.begin(), by_record.end(), [&](const auto& e) { return e.first == rec; });
    if (it == by_record.end()) {
      by_record.push_back({rec, {}});
      it = by_record.end() - 1;
    }
    it->second.push_back(s);
  }
  Backend* be = model_->backend();
  const int64_t vocab = model_->config().vocab_size;
  for (auto& [rec, members] : by_record) {
    const int64_t total = rec->result.logits.dim(0);
    std::vector<Slot*> ok;
    std::vector<const ForwardRecord::Part*> parts;
    int64_t covered = 0;
    for (Slot* s : members) {
      const Tensor& dl = *s->request->dlogits;
      auto part = std::find_if(rec->parts.begin(), rec->parts.end(),
                               [&](const ForwardRecord::Part& p) { return p.member == s->member; });
      if (part == rec->parts.end()) {
        s->request->status = absl::InternalError("JointGroup: backward for a forward the member was not in");
        continue;
      }
      if (dl.shape() != std::vector<int64_t>{part->rows, vocab}) {
        s->request->status = absl::InvalidArgumentError(absl::StrCat(
            "Backward: dlogits must be ", ShapeString({part->rows, vocab}), ", got ", ShapeString(dl.shape())));
        continue;
      }
      ok.push_back(s);
      parts.push_back(&*part);
      covered += part->rows;
    }
    if (ok.empty()) continue;
    absl::Status status = absl::OkStatus();
    Tensor stacked;
    if (ok.size() == 1 && covered == total) {
      stacked = *ok[0]->request->dlogits;  // a member alone in its forward: its dlogits as they are
    } else {
      absl::StatusOr<Tensor> buf = be->Alloc({total, vocab}, ok[0]->request->dlogits->dtype());
      status = buf.status();
      if (status.ok()) {
        stacked = *std::move(buf);
        if (covered < total) status = be->Fill(stacked, 0.0f);  // rows of members that left: no loss
      }
      if (status.ok()) {
        std::vector<Tensor> views;
        views.reserve(ok.size());
        std::vector<CopyPair> copies;
        for (size_t i = 0; i < ok.size(); ++i) {
          views.push_back(stacked.Rows(parts[i]->row_begin, parts[i]->rows));
          copies.push_back({ok[i]->request->dlogits, &views.back()});
        }
        status = be->CopyMany(copies);
      }
    }
    if (status.ok()) {
      std::vector<Gradients*> grads;
      for (Slot* s : ok) grads.push_back(s->member->backward_gradients_);
      status = model_->BackwardFromLogits(rec->result, stacked, absl::MakeConstSpan(grads));
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.backward_passes;
      stats_.max_members_in_pass = std::max<int64_t>(stats_.max_members_in_pass, ok.size());
    }
    for (Slot* s : ok) s->request->status = status;
  }
}

JointMember::~JointMember() { group_->Leave(this); }

absl::Status JointMember::SetTrainable(std::shared_ptr<const ExpertOverlay> overlay,
                                       std::vector<SlotId> trainable) {
  if (has_trainable()) return absl::FailedPreconditionError("JointMember: the trainable part is already set");
  ASSIGN_OR_RETURN(inner_, ModelTrainable::ForExperts(group_->model_, std::move(overlay), std::move(trainable)));
  return absl::OkStatus();
}

absl::Status JointMember::SetLora(std::unique_ptr<LoraTrainable> lora) {
  if (has_trainable()) return absl::FailedPreconditionError("JointMember: the trainable part is already set");
  if (lora == nullptr) return absl::InvalidArgumentError("JointMember: SetLora(nullptr)");
  lora_ = std::move(lora);
  return absl::OkStatus();
}

std::vector<TrainParam> JointMember::Parameters() {
  if (lora_ != nullptr) return lora_->Parameters();
  return inner_ != nullptr ? inner_->Parameters() : std::vector<TrainParam>();
}

Tensor JointMember::FlatGradients() {
  if (lora_ != nullptr) return lora_->FlatGradients();
  return inner_ != nullptr ? inner_->FlatGradients() : Tensor();
}

absl::StatusOr<Tensor> JointMember::Forward(absl::Span<const std::vector<int32_t>> seqs, bool training) {
  last_.reset();
  last_training_ = false;
  if (!has_trainable()) return absl::FailedPreconditionError("JointMember: Forward before SetTrainable");
  // This member's own input errors are its own: checked before its batch joins the others'.
  if (seqs.empty()) return absl::InvalidArgumentError("Forward: empty batch");
  const int64_t vocab = vocab_size();
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (seqs[i].empty()) return absl::InvalidArgumentError(absl::StrCat("Forward: sequence ", i, " is empty"));
    for (int32_t t : seqs[i]) {
      if (t < 0 || t >= vocab) {
        return absl::InvalidArgumentError(
            absl::StrCat("Forward: sequence ", i, " has token ", t, " outside the vocabulary [0, ", vocab, ")"));
      }
    }
  }
  if (lora_ != nullptr) {
    ASSIGN_OR_RETURN(forward_overlay_, lora_->PrepareForward());  // W' from the current factors
  } else {
    forward_overlay_ = inner_->overlay().get();
  }
  JointGroup::Request r;
  r.training = training;
  r.seqs = seqs;
  RETURN_IF_ERROR(group_->Submit(this, &r));
  last_ = std::move(r.result_record);
  last_training_ = training;
  return r.logits;
}

absl::Status JointMember::Backward(const Tensor& dlogits) {
  if (!last_training_ || last_ == nullptr) {
    return absl::FailedPreconditionError("Backward needs a preceding Forward with training = true");
  }
  if (lora_ != nullptr) {
    ASSIGN_OR_RETURN(backward_gradients_, lora_->PrepareBackward());  // dL/dW', zeroed
  } else {
    backward_gradients_ = inner_->mutable_gradients();
  }
  JointGroup::Request r;
  r.backward = true;
  r.dlogits = &dlogits;
  r.record = last_;
  RETURN_IF_ERROR(group_->Submit(this, &r));
  return lora_ != nullptr ? lora_->FinishBackward() : absl::OkStatus();
}

}  // namespace tessera::train
