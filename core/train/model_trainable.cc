#include "core/train/model_trainable.h"

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "core/model/hf_names.h"
#include "core/util/status_macros.h"

namespace tessera::train {

absl::StatusOr<std::unique_ptr<ModelTrainable>> ModelTrainable::ForExperts(
    const Model* model, std::shared_ptr<const ExpertOverlay> overlay, std::vector<SlotId> trainable) {
  if (model == nullptr || overlay == nullptr) {
    return absl::InvalidArgumentError("model and overlay are required");
  }
  if (trainable.empty()) return absl::InvalidArgumentError("no trainable slots");
  const ModelConfig& config = model->config();
  std::set<SlotId> seen;
  for (SlotId s : trainable) {
    RETURN_IF_ERROR(ValidateSlot(config, s));
    if (!seen.insert(s).second) {
      return absl::InvalidArgumentError(absl::StrCat("slot ", s.ToString(), " listed twice"));
    }
    if (!overlay->Has(s)) {
      return absl::InvalidArgumentError(
          absl::StrCat("slot ", s.ToString(), " is trainable but not held by the overlay"));
    }
  }
  std::unique_ptr<ModelTrainable> t(new ModelTrainable());
  t->model_ = model;
  t->overlay_ = std::move(overlay);
  t->trainable_ = std::move(trainable);
  ASSIGN_OR_RETURN(t->grads_, Gradients::Create(config, TrainableSet::Slots(t->trainable_),
                                                model->backend()));
  // Only assignments this overlay served count (the same as all of them when every sequence carries it).
  t->grads_.owner = t->overlay_.get();
  for (SlotId s : t->trainable_) {
    const ExpertWeights* w = t->overlay_->Find(s);
    ExpertWeights& g = t->grads_.slots.at(s);
    const std::pair<hf::ExpertPart, std::pair<const Tensor*, Tensor*>> parts[] = {
        {hf::ExpertPart::kGate, {&w->gate, &g.gate}},
        {hf::ExpertPart::kUp, {&w->up, &g.up}},
        {hf::ExpertPart::kDown, {&w->down, &g.down}}};
    for (const auto& [part, tensors] : parts) {
      t->params_.push_back({hf::ExpertName(config.family, s.layer, s.expert, part), *tensors.first,
                            *tensors.second, true});
    }
  }
  return t;
}

absl::StatusOr<std::unique_ptr<ModelTrainable>> ModelTrainable::ForAllParameters(Model* model) {
  if (model == nullptr) return absl::InvalidArgumentError("model is required");
  std::unique_ptr<ModelTrainable> t(new ModelTrainable());
  t->model_ = model;
  const ModelConfig& config = model->config();
  ASSIGN_OR_RETURN(t->grads_, Gradients::Create(config, TrainableSet::All(), model->backend()));
  std::map<std::string, Tensor*> grad_by_name;
  for (const NamedParam& g : t->grads_.Named(config)) grad_by_name[g.name] = g.tensor;
  for (const NamedParam& p : model->mutable_weights().Parameters(config)) {
    auto it = grad_by_name.find(p.name);
    if (it == grad_by_name.end()) {
      return absl::InternalError(absl::StrCat("no gradient buffer for parameter ", p.name));
    }
    t->params_.push_back({p.name, *p.tensor, *it->second, p.tensor->rank() >= 2});
  }
  return t;
}

absl::StatusOr<Tensor> ModelTrainable::Forward(absl::Span<const std::vector<int32_t>> seqs,
                                               bool training) {
  std::vector<SequenceInput> batch;
  batch.reserve(seqs.size());
  for (const auto& s : seqs) batch.push_back({absl::MakeConstSpan(s), overlay_.get(), nullptr});
  ForwardOptions opt;
  opt.logits = LogitsMode::kAll;
  opt.save_activations = training;
  ASSIGN_OR_RETURN(last_, model_->Forward(batch, opt));
  last_training_ = training;
  return last_.logits;
}

absl::Status ModelTrainable::Backward(const Tensor& dlogits) {
  if (!last_training_) {
    return absl::FailedPreconditionError("Backward needs a preceding Forward with training = true");
  }
  return model_->BackwardFromLogits(last_, dlogits, &grads_);
}

int64_t ModelTrainable::gradient_bytes() const { return grads_.NumElements() * 4; }

}  // namespace tessera::train
