// LoraTrainable (see lora_trainable.h).
#include "core/train/lora_trainable.h"

#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "core/data/rng.h"
#include "core/util/status_macros.h"

namespace tessera::train {
namespace {

constexpr hf::ExpertPart kParts[3] = {hf::ExpertPart::kGate, hf::ExpertPart::kUp, hf::ExpertPart::kDown};

Tensor& Part(ExpertWeights& w, int p) { return p == 0 ? w.gate : p == 1 ? w.up : w.down; }
const Tensor& Part(const ExpertWeights& w, int p) { return p == 0 ? w.gate : p == 1 ? w.up : w.down; }

// A's init for (slot, part): U(-1/sqrt(in), 1/sqrt(in)) from a stream of its own.
std::vector<float> InitA(uint64_t seed, SlotId slot, int part, int64_t rank, int64_t in) {
  data::Rng rng(seed ^ (0x5851F42D4C957F2Dull * (static_cast<uint64_t>(slot.layer) * 1000003u +
                                                  static_cast<uint64_t>(slot.expert) * 3u + part + 1)));
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  std::vector<float> a(static_cast<size_t>(rank * in));
  for (float& x : a) x = static_cast<float>((2.0 * rng.Double() - 1.0) * bound);
  return a;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LoraTrainable>> LoraTrainable::Create(const Model* model, const LoraAdapter& start,
                                                                      std::vector<SlotId> trainable,
                                                                      const LoraOptions& options) {
  if (model == nullptr) return absl::InvalidArgumentError("LoraTrainable: model is required");
  if (trainable.empty()) return absl::InvalidArgumentError("LoraTrainable: no trainable slots");
  const ModelConfig& config = model->config();
  if (options.rank < 1 || options.rank > std::min(config.hidden_size, config.expert_dim)) {
    return absl::InvalidArgumentError(absl::StrCat("lora_rank: must be in [1, ",
                                                   std::min(config.hidden_size, config.expert_dim),
                                                   "] (the expert matrices' smaller side), got ", options.rank));
  }
  if (!std::isfinite(options.alpha) || options.alpha <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("lora_alpha: must be > 0, got ", options.alpha));
  }
  if (!start.factors.empty() && start.rank != options.rank) {
    return absl::InvalidArgumentError(absl::StrCat("lora_rank: the version training continues from has rank ",
                                                   start.rank, "; continue it with that rank, got ", options.rank));
  }
  std::set<SlotId> seen;
  for (SlotId s : trainable) {
    RETURN_IF_ERROR(ValidateSlot(config, s));
    if (!seen.insert(s).second) {
      return absl::InvalidArgumentError(absl::StrCat("slot ", s.ToString(), " listed twice"));
    }
  }
  std::sort(trainable.begin(), trainable.end());
  Backend* be = model->backend();
  std::unique_ptr<LoraTrainable> t(new LoraTrainable());
  t->model_ = model;
  t->options_ = options;
  t->start_ = start;
  t->start_.rank = options.rank;
  t->start_.alpha = start.factors.empty() ? options.alpha : start.alpha;
  t->options_.alpha = t->start_.alpha;  // a continued adapter keeps its scale
  t->trainable_ = trainable;
  const int64_t r = options.rank;

  // Gradients of A and B: one flat f32 buffer (views 64-element aligned), zeroed.
  int64_t flat = 0;
  auto aligned = [](int64_t n) { return (n + 63) / 64 * 64; };
  for (size_t i = 0; i < trainable.size(); ++i) {
    for (int p = 0; p < 3; ++p) {
      const std::vector<int64_t> w = ExpertPartShape(config, p);
      flat += aligned(r * w[1]) + aligned(w[0] * r);
    }
  }
  ASSIGN_OR_RETURN(t->flat_grad_, be->Zeros({flat}, DType::kF32));
  ASSIGN_OR_RETURN(t->staging_, be->Alloc({config.expert_dim * config.hidden_size}, DType::kF32));
  ASSIGN_OR_RETURN(t->dense_, Gradients::Create(config, TrainableSet::Slots(trainable), be));

  // The working overlay: the carried slots merged once (start minus the trained slots), the trained
  // slots' W' allocated here and merged below.
  LoraAdapter carried = t->start_;
  std::map<SlotId, ExpertWeights> slots;
  int64_t offset = 0;
  const ExpertOverlay* carried_overlay = nullptr;
  std::shared_ptr<const ExpertOverlay> carried_holder;
  for (SlotId s : trainable) {
    carried.factors.erase(s);
    carried.dense.erase(s);
  }
  if (!carried.SlotIds().empty()) {
    ASSIGN_OR_RETURN(carried_holder, MergeLoraAdapter(config, carried, model->weights(), be, "",
                                                      model->weights().matrix_dtype()));
    carried_overlay = carried_holder.get();
    for (const auto& [s, w] : carried_overlay->slots()) slots[s] = w;
  }
  for (SlotId s : trainable) {
    SlotState& st = t->state_[s];
    auto dense = start.dense.find(s);
    auto factors = start.factors.find(s);
    ASSIGN_OR_RETURN(slots[s], AllocateExpertWeights(config, model->weights().matrix_dtype(), be));
    for (int p = 0; p < 3; ++p) {
      const std::vector<int64_t> w = ExpertPartShape(config, p);
      if (dense != start.dense.end()) {
        ASSIGN_OR_RETURN(st.w0[p], be->FromHost(dense->second[p], w));
      } else {
        st.w0[p] = Part(model->weights().layers[s.layer].experts[s.expert], p);
      }
      std::vector<float> a = factors != start.factors.end() ? factors->second[p].a : InitA(options.seed, s, p, r, w[1]);
      std::vector<float> b = factors != start.factors.end() ? factors->second[p].b
                                                             : std::vector<float>(static_cast<size_t>(w[0] * r), 0.0f);
      ASSIGN_OR_RETURN(st.a[p], be->FromHost(a, {r, w[1]}));
      ASSIGN_OR_RETURN(st.b[p], be->FromHost(b, {w[0], r}));
      st.grad_a[p] = t->flat_grad_.Rows(offset, r * w[1]).Reshape({r, w[1]});
      offset += aligned(r * w[1]);
      st.grad_b[p] = t->flat_grad_.Rows(offset, w[0] * r).Reshape({w[0], r});
      offset += aligned(w[0] * r);
      t->params_.push_back({LoraTensorName(config.family, s.layer, s.expert, kParts[p], false), st.a[p], st.grad_a[p], true});
      t->params_.push_back({LoraTensorName(config.family, s.layer, s.expert, kParts[p], true), st.b[p], st.grad_b[p], true});
    }
    for (int p = 0; p < 3; ++p) {
      RETURN_IF_ERROR(MergeLoraPart(be, st.w0[p], st.a[p], st.b[p], t->scale(), t->staging_, Part(slots[s], p)));
    }
  }
  ASSIGN_OR_RETURN(t->overlay_, ExpertOverlay::FromWeights(config, std::move(slots), be));
  t->dense_.owner = t->overlay_.get();  // its own rows only, also in a batch shared with other jobs
  return t;
}

absl::Status LoraTrainable::Merge() {
  Backend* be = model_->backend();
  for (auto& [s, st] : state_) {
    const ExpertWeights* w = overlay_->Find(s);
    for (int p = 0; p < 3; ++p) {
      // The overlay is shared as const for serving; this object is its only user while training
      // (ExpertOverlay's contract for trainers), so its slot tensors are rewritten in place.
      Tensor out = Part(*w, p);
      RETURN_IF_ERROR(MergeLoraPart(be, st.w0[p], st.a[p], st.b[p], scale(), staging_, out));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<const ExpertOverlay*> LoraTrainable::PrepareForward() {
  RETURN_IF_ERROR(Merge());
  return overlay_.get();
}

absl::StatusOr<Tensor> LoraTrainable::Forward(absl::Span<const std::vector<int32_t>> seqs, bool training) {
  ASSIGN_OR_RETURN(const ExpertOverlay* overlay, PrepareForward());
  std::vector<SequenceInput> batch;
  batch.reserve(seqs.size());
  for (const auto& s : seqs) batch.push_back({absl::MakeConstSpan(s), overlay, nullptr});
  ForwardOptions opt;
  opt.logits = LogitsMode::kAll;
  opt.save_activations = training;
  ASSIGN_OR_RETURN(last_, model_->Forward(batch, opt));
  last_training_ = training;
  return last_.logits;
}

absl::StatusOr<Gradients*> LoraTrainable::PrepareBackward() {
  RETURN_IF_ERROR(dense_.Zero(model_->backend()));
  return &dense_;
}

absl::Status LoraTrainable::FinishBackward() {
  Backend* be = model_->backend();
  const float s = scale();
  for (auto& [slot, st] : state_) {
    const ExpertWeights& dw = dense_.slots.at(slot);
    for (int p = 0; p < 3; ++p) {
      const Tensor& g = Part(dw, p);                                          // dL/dW' [out, in]
      RETURN_IF_ERROR(be->Matmul(g, false, st.a[p], true, st.grad_b[p], s, 1.0f));  // dB += s dW' A^T
      RETURN_IF_ERROR(be->Matmul(st.b[p], true, g, false, st.grad_a[p], s, 1.0f));  // dA += s B^T dW'
    }
  }
  return absl::OkStatus();
}

absl::Status LoraTrainable::Backward(const Tensor& dlogits) {
  if (!last_training_) {
    return absl::FailedPreconditionError("Backward needs a preceding Forward with training = true");
  }
  ASSIGN_OR_RETURN(Gradients* dense, PrepareBackward());
  RETURN_IF_ERROR(model_->BackwardFromLogits(last_, dlogits, dense));
  return FinishBackward();
}

absl::StatusOr<std::shared_ptr<const ExpertOverlay>> LoraTrainable::MergedOverlay() {
  RETURN_IF_ERROR(Merge());
  return overlay_;
}

absl::StatusOr<LoraAdapter> LoraTrainable::Adapter() const {
  LoraAdapter out = start_;
  Backend* be = model_->backend();
  for (const auto& [s, st] : state_) {
    std::array<LoraFactors, 3>& f = out.factors[s];
    for (int p = 0; p < 3; ++p) {
      ASSIGN_OR_RETURN(f[p].a, be->ToHostF32(st.a[p]));
      ASSIGN_OR_RETURN(f[p].b, be->ToHostF32(st.b[p]));
    }
  }
  out.metadata.clear();
  return out;
}

}  // namespace tessera::train
