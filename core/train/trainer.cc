#include "core/train/trainer.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/data/rng.h"
#include "core/io/safetensors.h"
#include "core/train/grad_clip.h"
#include "core/util/status_macros.h"

namespace tessera::train {
namespace {

constexpr char kCheckpointFormat[] = "tessera-train-checkpoint-v1";

class Fnv64 {
 public:
  void Add(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) h_ = (h_ ^ p[i]) * 0x100000001b3ull;
  }
  template <typename T> void AddValue(const T& v) { Add(&v, sizeof(v)); }
  void AddString(std::string_view s) { AddValue(s.size()); Add(s.data(), s.size()); }
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = 0xcbf29ce484222325ull;
};

void HashExamples(Fnv64& h, const std::vector<data::TokenizedExample>& examples) {
  h.AddValue(examples.size());
  for (const auto& e : examples) {
    h.AddValue(e.tokens.size());
    h.Add(e.tokens.data(), e.tokens.size() * sizeof(int32_t));
    h.Add(e.loss_mask.data(), e.loss_mask.size());
  }
}

std::string DoubleString(double v) { return absl::StrFormat("%.17g", v); }

double ParseDouble(std::string_view s) {
  return std::strtod(std::string(s).c_str(), nullptr);  // accepts "nan", "inf"
}

std::string JoinDoubles(const std::vector<double>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) absl::StrAppend(&out, i ? "," : "", DoubleString(v[i]));
  return out;
}

std::vector<double> SplitDoubles(const std::string& s) {
  std::vector<double> out;
  if (s.empty()) return out;
  for (absl::string_view part : absl::StrSplit(s, ',')) out.push_back(ParseDouble(std::string(part)));
  return out;
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

absl::Status TrainerOptions::Validate() const {
  auto bad = [](std::string_view field, std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("trainer option ", std::string(field), ": ",
                                                   std::string(why)));
  };
  if (max_steps < 1) return bad("max_steps", "must be >= 1");
  if (batch_size < 1) return bad("batch_size", "must be >= 1");
  if (grad_accum_steps < 1 || grad_accum_steps > batch_size) {
    return bad("grad_accum_steps", "must be in [1, batch_size]");
  }
  if (seq_len < 2) return bad("seq_len", "must be >= 2");
  if (!(learning_rate > 0) || !std::isfinite(learning_rate)) return bad("learning_rate", "must be > 0");
  if (warmup_steps < 0) return bad("warmup_steps", "must be >= 0");
  if (min_lr_ratio < 0 || min_lr_ratio > 1) return bad("min_lr_ratio", "must be in [0, 1]");
  if (weight_decay < 0) return bad("weight_decay", "must be >= 0");
  if (beta1 < 0 || beta1 >= 1) return bad("beta1", "must be in [0, 1)");
  if (beta2 < 0 || beta2 >= 1) return bad("beta2", "must be in [0, 1)");
  if (!(adam_eps > 0)) return bad("adam_eps", "must be > 0");
  if (eval_every < 0) return bad("eval_every", "must be >= 0");
  if (early_stopping_patience < 0) return bad("early_stopping_patience", "must be >= 0");
  if (!(early_stopping_min_delta >= 0)) return bad("early_stopping_min_delta", "must be >= 0");
  if (eval_max_examples < 1) return bad("eval_max_examples", "must be >= 1");
  if (validation_fraction <= 0 || validation_fraction >= 1) {
    return bad("validation_fraction", "must be in (0, 1)");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(
    TrainableLm* model, std::vector<data::TokenizedExample> train,
    std::vector<data::TokenizedExample> validation, const TrainerOptions& options) {
  if (model == nullptr) return absl::InvalidArgumentError("model is null");
  RETURN_IF_ERROR(options.Validate());
  if (train.empty()) return absl::InvalidArgumentError("training set is empty");
  for (size_t i = 0; i < train.size(); ++i) {
    if (train[i].tokens.size() != train[i].loss_mask.size() || train[i].tokens.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("training example ", i, ": tokens and loss_mask differ in length or are empty"));
    }
  }
  std::unique_ptr<Trainer> t(new Trainer());
  t->model_ = model;
  t->options_ = options;
  t->schedule_ = LrSchedule{options.learning_rate, options.warmup_steps, options.max_steps,
                            options.min_lr_ratio};
  if (validation.empty()) {
    if (train.size() < 2) return absl::InvalidArgumentError("need >= 2 examples to hold out validation");
    std::vector<size_t> idx(train.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    data::Rng rng(data::DeriveSeed(options.seed, 0x73706c6974ull));
    rng.Shuffle(idx);
    size_t n_val = static_cast<size_t>(std::ceil(options.validation_fraction * train.size()));
    n_val = std::clamp<size_t>(n_val, 1, train.size() - 1);
    std::vector<bool> is_val(train.size(), false);
    for (size_t i = 0; i < n_val; ++i) is_val[idx[i]] = true;
    std::vector<data::TokenizedExample> kept;
    for (size_t i = 0; i < train.size(); ++i) {
      (is_val[i] ? validation : kept).push_back(std::move(train[i]));
    }
    train = std::move(kept);
  }
  t->train_ = std::move(train);
  t->validation_ = std::move(validation);
  t->order_ = std::make_unique<DataOrder>(static_cast<int64_t>(t->train_.size()), options.seed);
  t->params_ = model->Parameters();
  if (t->params_.empty()) return absl::InvalidArgumentError("the model has no trainable parameters");
  t->flat_grad_ = model->FlatGradients();
  if (t->flat_grad_.defined()) {
    t->grad_buffers_.push_back(&t->flat_grad_);
  } else {
    for (TrainParam& p : t->params_) t->grad_buffers_.push_back(&p.grad);
  }
  Backend& be = model->backend();
  for (const TrainParam& p : t->params_) {
    if (!p.grad.defined() || p.grad.numel() != p.value.numel()) {
      return absl::InvalidArgumentError(absl::StrCat("parameter ", p.name, " has no matching gradient"));
    }
    ASSIGN_OR_RETURN(AdamWState s, AdamWState::Create(be, p.value));
    t->opt_.push_back(std::move(s));
  }
  return t;
}

int64_t Trainer::trainable_parameters() const {
  int64_t n = 0;
  for (const TrainParam& p : params_) n += p.value.numel();
  return n;
}

int64_t Trainer::optimizer_state_bytes() const {
  int64_t n = 0;
  for (const AdamWState& s : opt_) n += s.bytes();
  return n;
}

int64_t Trainer::EvaluationRows(int64_t micro_batch, int64_t seq_len, int64_t vocab_size) {
  const int64_t twice = 2 * std::max<int64_t>(1, micro_batch);
  const int64_t row_bytes = std::max<int64_t>(1, seq_len) * std::max<int64_t>(1, vocab_size) *
                            static_cast<int64_t>(sizeof(float));
  const int64_t small_vocab_rows = std::min(kMaxEvalRows, kEvalLogitsBytes / row_bytes);
  return std::max(twice, small_vocab_rows);
}

absl::StatusOr<double> Trainer::EvaluateLoss(const std::vector<data::TokenizedExample>& examples) {
  Backend& be = model_->backend();
  const int64_t n = std::min<int64_t>(options_.eval_max_examples, examples.size());
  const int64_t chunk = EvaluationRows(options_.batch_size / options_.grad_accum_steps, options_.seq_len,
                                       model_->vocab_size());
  double sum = 0.0;
  int64_t count = 0;
  for (int64_t b = 0; b < n; b += chunk) {
    std::vector<const data::TokenizedExample*> ptrs;
    for (int64_t i = b; i < std::min(n, b + chunk); ++i) ptrs.push_back(&examples[i]);
    LmBatch batch = MakeLmBatch(ptrs, options_.seq_len);
    if (batch.num_targets == 0) continue;
    ASSIGN_OR_RETURN(Tensor logits, model_->Forward(batch.seqs, /*training=*/false));
    ASSIGN_OR_RETURN(Tensor targets, be.FromHost(batch.targets, {batch.num_tokens}));
    ASSIGN_OR_RETURN(Tensor loss, be.Alloc({batch.num_tokens}, DType::kF32));
    RETURN_IF_ERROR(be.CrossEntropyForward(logits, targets, loss, nullptr));
    ASSIGN_OR_RETURN(std::vector<float> host, be.ToHostF32(loss));
    for (float l : host) sum += l;
    count += batch.num_targets;
  }
  if (count == 0) return absl::InvalidArgumentError("evaluation set has no supervised tokens");
  return sum / static_cast<double>(count);
}

absl::StatusOr<double> Trainer::Step(double* grad_norm, int64_t* tokens) {
  Backend& be = model_->backend();
  const int64_t step = step_ + 1;
  for (Tensor* g : grad_buffers_) RETURN_IF_ERROR(be.Fill(*g, 0.0f));

  std::vector<const data::TokenizedExample*> picked;
  for (int64_t i = 0; i < options_.batch_size; ++i) picked.push_back(&train_[order_->Next()]);
  std::vector<LmBatch> micro;
  int64_t total_targets = 0;
  const int64_t k = options_.grad_accum_steps;
  for (int64_t j = 0, begin = 0; j < k; ++j) {
    const int64_t size = options_.batch_size / k + (j < options_.batch_size % k ? 1 : 0);
    micro.push_back(MakeLmBatch(absl::MakeConstSpan(picked).subspan(begin, size), options_.seq_len));
    begin += size;
    total_targets += micro.back().num_targets;
  }
  if (total_targets == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step ", step, ": the batch has no supervised tokens (are completions cut off by seq_len?)"));
  }

  double loss_sum = 0.0;
  *tokens = 0;
  for (const LmBatch& mb : micro) {
    *tokens += mb.num_tokens;
    if (mb.num_targets == 0) continue;  // contributes neither loss nor gradient
    ASSIGN_OR_RETURN(Tensor logits, model_->Forward(mb.seqs, /*training=*/true));
    ASSIGN_OR_RETURN(Tensor targets, be.FromHost(mb.targets, {mb.num_tokens}));
    ASSIGN_OR_RETURN(Tensor loss, be.Alloc({mb.num_tokens}, DType::kF32));
    ASSIGN_OR_RETURN(Tensor lse, be.Alloc({mb.num_tokens}, DType::kF32));
    RETURN_IF_ERROR(be.CrossEntropyForward(logits, targets, loss, &lse));
    ASSIGN_OR_RETURN(std::vector<float> host, be.ToHostF32(loss));
    for (float l : host) loss_sum += l;
    ASSIGN_OR_RETURN(Tensor dloss, be.Alloc({mb.num_tokens}, DType::kF32));
    RETURN_IF_ERROR(be.Fill(dloss, static_cast<float>(1.0 / static_cast<double>(total_targets))));
    ASSIGN_OR_RETURN(Tensor dlogits, be.Alloc(logits.shape(), model_->LogitsGradDtype()));
    RETURN_IF_ERROR(be.CrossEntropyBackward(logits, targets, lse, dloss, dlogits));
    RETURN_IF_ERROR(model_->Backward(dlogits));
  }
  const double loss = loss_sum / static_cast<double>(total_targets);
  if (!std::isfinite(loss)) {
    return absl::FailedPreconditionError(
        absl::StrCat("training diverged at step ", step, ": loss is ", DoubleString(loss)));
  }
  ASSIGN_OR_RETURN(*grad_norm, ClipGradNorm(be, grad_buffers_, options_.max_grad_norm));
  if (!std::isfinite(*grad_norm)) {
    return absl::FailedPreconditionError(absl::StrCat("training diverged at step ", step,
                                                      ": gradient norm is ", DoubleString(*grad_norm)));
  }
  AdamWParams ap;
  ap.lr = static_cast<float>(schedule_.At(step));
  ap.beta1 = static_cast<float>(options_.beta1);
  ap.beta2 = static_cast<float>(options_.beta2);
  ap.eps = static_cast<float>(options_.adam_eps);
  ap.step = step;
  std::vector<AdamWTensor> entries;
  entries.reserve(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const float decay = params_[i].decay ? static_cast<float>(options_.weight_decay) : 0.0f;
    entries.push_back(opt_[i].Entry(params_[i].value, params_[i].grad, decay));
  }
  RETURN_IF_ERROR(be.AdamWMany(entries, ap));  // the whole update in one call (one launch on a GPU)
  step_ = step;
  return loss;
}

absl::StatusOr<TrainResult> Trainer::Run(const RunControls& controls) {
  const auto start = std::chrono::steady_clock::now();
  TrainResult result;
  result.trainable_parameters = trainable_parameters();
  if (step_ == 0 && std::isnan(initial_val_loss_)) {
    ASSIGN_OR_RETURN(initial_val_loss_, ValidationLoss());
  }
  result.initial_val_loss = initial_val_loss_;
  if (best_step_ < 0 && !stopped_early_) {
    // The starting point is the first candidate (after a resume: the resumed parameters).
    double start_loss = initial_val_loss_;
    if (step_ > 0 || std::isnan(start_loss)) {
      ASSIGN_OR_RETURN(start_loss, ValidationLoss());
    }
    RETURN_IF_ERROR(ObserveValidation(start_loss));
  }
  const int64_t first_step = step_;
  double step_seconds = 0.0;
  while (step_ < options_.max_steps && !stopped_early_) {
    if (controls.cancel != nullptr && controls.cancel->load()) {
      return absl::CancelledError(absl::StrCat("training cancelled after step ", step_));
    }
    const auto t0 = std::chrono::steady_clock::now();
    double grad_norm = 0.0;
    int64_t tokens = 0;
    ASSIGN_OR_RETURN(double loss, Step(&grad_norm, &tokens));
    losses_.push_back(loss);
    tokens_seen_ += tokens;
    result.tokens += tokens;
    TrainProgress p;
    p.step = step_;
    p.max_steps = options_.max_steps;
    p.loss = loss;
    p.learning_rate = schedule_.At(step_);
    p.grad_norm = grad_norm;
    const bool eval_now = step_ == options_.max_steps ||
                          (options_.eval_every > 0 && step_ % options_.eval_every == 0);
    if (eval_now) {
      ASSIGN_OR_RETURN(p.val_loss, ValidationLoss());
      if (!std::isfinite(p.val_loss)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "training diverged at step ", step_, ": validation loss is ", DoubleString(p.val_loss)));
      }
      RETURN_IF_ERROR(ObserveValidation(p.val_loss));
    }
    val_losses_.push_back(p.val_loss);
    step_seconds += Seconds(t0);
    const double elapsed = Seconds(start);
    p.tokens_seen = tokens_seen_;
    p.tokens_per_second = elapsed > 0 ? result.tokens / elapsed : 0.0;
    p.eta_seconds = step_seconds / static_cast<double>(step_ - first_step) *
                    static_cast<double>(options_.max_steps - step_);
    if (controls.on_progress) controls.on_progress(p);
    if (controls.stop_after_step > 0 && step_ >= controls.stop_after_step) break;
  }
  result.steps = step_;
  result.finished = step_ >= options_.max_steps || stopped_early_;
  result.stopped_early = stopped_early_;
  if (!losses_.empty()) result.final_train_loss = losses_.back();
  for (auto it = val_losses_.rbegin(); it != val_losses_.rend(); ++it) {
    if (!std::isnan(*it)) {
      result.final_val_loss = *it;
      break;
    }
  }
  result.best_step = best_step_;
  result.best_val_loss = best_val_;
  if (result.finished && options_.restore_best) {
    RETURN_IF_ERROR(RestoreBest());
    result.final_val_loss = best_val_;
  }
  result.wall_seconds = Seconds(start);
  return result;
}

absl::Status Trainer::ObserveValidation(double val_loss) {
  if (best_step_ >= 0 && !(val_loss < best_val_ * (1.0 - options_.early_stopping_min_delta))) {
    ++evals_since_best_;
    if (options_.early_stopping_patience > 0 && evals_since_best_ >= options_.early_stopping_patience &&
        step_ < options_.max_steps) {  // at max_steps the run ends anyway: not an early stop
      stopped_early_ = true;
    }
    return absl::OkStatus();
  }
  best_val_ = val_loss;
  best_step_ = step_;
  evals_since_best_ = 0;
  if (!options_.restore_best) return absl::OkStatus();
  Backend& be = model_->backend();
  if (best_params_.empty()) {
    for (const TrainParam& p : params_) {
      ASSIGN_OR_RETURN(Tensor copy, be.Alloc(p.value.shape(), p.value.dtype()));
      best_params_.push_back(std::move(copy));
    }
  }
  for (size_t i = 0; i < params_.size(); ++i) RETURN_IF_ERROR(be.Copy(params_[i].value, best_params_[i]));
  return absl::OkStatus();
}

absl::Status Trainer::RestoreBest() {
  if (best_params_.empty() || best_step_ == step_) return absl::OkStatus();
  Backend& be = model_->backend();
  for (size_t i = 0; i < params_.size(); ++i) RETURN_IF_ERROR(be.Copy(best_params_[i], params_[i].value));
  return absl::OkStatus();
}

std::string Trainer::Fingerprint() const {
  Fnv64 h;
  const TrainerOptions& o = options_;
  for (int64_t v : {o.max_steps, o.batch_size, o.grad_accum_steps, o.seq_len, o.warmup_steps,
                    o.eval_every, o.eval_max_examples}) {
    h.AddValue(v);
  }
  for (double v : {o.learning_rate, o.min_lr_ratio, o.weight_decay, o.beta1, o.beta2, o.adam_eps,
                   o.max_grad_norm, o.validation_fraction}) {
    h.AddValue(v);
  }
  h.AddValue(o.seed);
  HashExamples(h, train_);
  HashExamples(h, validation_);
  for (const TrainParam& p : params_) {
    h.AddString(p.name);
    for (int64_t d : p.value.shape()) h.AddValue(d);
  }
  return absl::StrFormat("%016x", h.value());
}

absl::Status Trainer::SaveCheckpoint(const std::string& path) const {
  Backend& be = model_->backend();
  std::vector<std::vector<float>> host;
  std::vector<io::HostTensor> tensors;
  host.reserve(params_.size() * 3);
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::pair<const char*, const Tensor*> parts[] = {
        {"param/", &opt_[i].Weights(params_[i].value)}, {"adam_m/", &opt_[i].m}, {"adam_v/", &opt_[i].v}};
    for (const auto& [prefix, t] : parts) {
      ASSIGN_OR_RETURN(std::vector<float> values, be.ToHostF32(*t));
      host.push_back(std::move(values));
      tensors.push_back({absl::StrCat(prefix, params_[i].name), DType::kF32, t->shape(),
                         host.back().data()});
    }
  }
  // The best validation's snapshot travels in the same file, so a resumed run still ends with the best
  // parameters across the restart (and the file is written atomically: never half old, half new).
  for (size_t i = 0; i < best_params_.size(); ++i) {
    ASSIGN_OR_RETURN(std::vector<float> values, be.ToHostF32(best_params_[i]));
    host.push_back(std::move(values));
    tensors.push_back({absl::StrCat("best/", params_[i].name), DType::kF32, best_params_[i].shape(),
                       host.back().data()});
  }
  const DataOrder::State s = order_->state();
  std::map<std::string, std::string> meta = {
      {"format", kCheckpointFormat},
      {"fingerprint", Fingerprint()},
      {"step", absl::StrCat(step_)},
      {"tokens_seen", absl::StrCat(tokens_seen_)},
      {"order_rng_state", absl::StrCat(s.epoch_rng_state)},
      {"order_epoch", absl::StrCat(s.epoch)},
      {"order_index", absl::StrCat(s.index)},
      {"initial_val_loss", DoubleString(initial_val_loss_)},
      {"losses", JoinDoubles(losses_)},
      {"val_losses", JoinDoubles(val_losses_)},
      {"best_step", absl::StrCat(best_step_)},
      {"best_val_loss", DoubleString(best_val_)},
      {"evals_since_best", absl::StrCat(evals_since_best_)},
      {"stopped_early", stopped_early_ ? "1" : "0"},
      {"best_params", best_params_.empty() ? "0" : "1"},
  };
  return io::WriteSafetensorsFile(path, tensors, meta);
}

absl::Status Trainer::RestoreCheckpoint(const std::string& path) {
  ASSIGN_OR_RETURN(auto file, io::SafetensorsFile::Open(path));
  const auto& meta = file->metadata();
  auto get = [&](const std::string& key) -> absl::StatusOr<std::string> {
    auto it = meta.find(key);
    if (it == meta.end()) {
      return absl::DataLossError(absl::StrCat("checkpoint ", path, ": metadata \"", key, "\" missing"));
    }
    return it->second;
  };
  ASSIGN_OR_RETURN(std::string format, get("format"));
  if (format != kCheckpointFormat) {
    return absl::FailedPreconditionError(absl::StrCat("checkpoint ", path, ": format \"", format,
                                                      "\", expected ", kCheckpointFormat));
  }
  ASSIGN_OR_RETURN(std::string fingerprint, get("fingerprint"));
  if (fingerprint != Fingerprint()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint ", path, " was made with other options, data or parameters (fingerprint ",
        fingerprint, " vs ", Fingerprint(), ")"));
  }
  int64_t step = 0, tokens = 0, epoch = 0, index = 0;
  uint64_t rng_state = 0;
  ASSIGN_OR_RETURN(std::string s_step, get("step"));
  ASSIGN_OR_RETURN(std::string s_tokens, get("tokens_seen"));
  ASSIGN_OR_RETURN(std::string s_rng, get("order_rng_state"));
  ASSIGN_OR_RETURN(std::string s_epoch, get("order_epoch"));
  ASSIGN_OR_RETURN(std::string s_index, get("order_index"));
  ASSIGN_OR_RETURN(std::string s_init, get("initial_val_loss"));
  ASSIGN_OR_RETURN(std::string s_losses, get("losses"));
  ASSIGN_OR_RETURN(std::string s_val, get("val_losses"));
  if (!absl::SimpleAtoi(s_step, &step) || !absl::SimpleAtoi(s_tokens, &tokens) ||
      !absl::SimpleAtoi(s_rng, &rng_state) || !absl::SimpleAtoi(s_epoch, &epoch) ||
      !absl::SimpleAtoi(s_index, &index)) {
    return absl::DataLossError(absl::StrCat("checkpoint ", path, ": malformed state metadata"));
  }
  std::vector<double> losses = SplitDoubles(s_losses), val_losses = SplitDoubles(s_val);
  if (static_cast<int64_t>(losses.size()) != step || static_cast<int64_t>(val_losses.size()) != step) {
    return absl::DataLossError(absl::StrCat("checkpoint ", path, ": loss history does not match step"));
  }
  // Read everything before changing anything, so a bad file leaves the trainer untouched.
  std::vector<std::vector<float>> values;
  for (size_t i = 0; i < params_.size(); ++i) {
    for (const char* prefix : {"param/", "adam_m/", "adam_v/"}) {
      std::vector<float> buf(params_[i].value.numel());
      RETURN_IF_ERROR(file->ReadF32Into(absl::StrCat(prefix, params_[i].name),
                                        params_[i].value.shape(), buf.data()));
      values.push_back(std::move(buf));
    }
  }
  // Best-validation tracking (absent in checkpoints of older builds: then it starts anew from the
  // resumed parameters, as Run does without a checkpoint).
  int64_t best_step = -1, evals_since_best = 0;
  double best_val = std::numeric_limits<double>::quiet_NaN();
  bool stopped_early = false;
  std::vector<std::vector<float>> best_values;
  if (meta.count("best_step") > 0) {
    ASSIGN_OR_RETURN(std::string s_best_val, get("best_val_loss"));
    ASSIGN_OR_RETURN(std::string s_since, get("evals_since_best"));
    ASSIGN_OR_RETURN(std::string s_stopped, get("stopped_early"));
    ASSIGN_OR_RETURN(std::string s_best_params, get("best_params"));
    if (!absl::SimpleAtoi(meta.at("best_step"), &best_step) || !absl::SimpleAtoi(s_since, &evals_since_best) ||
        best_step > step) {
      return absl::DataLossError(absl::StrCat("checkpoint ", path, ": malformed best-validation metadata"));
    }
    best_val = ParseDouble(s_best_val);
    stopped_early = s_stopped == "1";
    if (options_.restore_best && best_step >= 0) {
      if (s_best_params != "1") {
        // Saved without restore_best: no snapshot to end with, so the tracking starts anew.
        best_step = -1;
        best_val = std::numeric_limits<double>::quiet_NaN();
        evals_since_best = 0;
      } else {
        for (size_t i = 0; i < params_.size(); ++i) {
          std::vector<float> buf(params_[i].value.numel());
          RETURN_IF_ERROR(file->ReadF32Into(absl::StrCat("best/", params_[i].name), params_[i].value.shape(),
                                            buf.data()));
          best_values.push_back(std::move(buf));
        }
      }
    }
  }
  Backend& be = model_->backend();
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor* dst[] = {&opt_[i].Weights(params_[i].value), &opt_[i].m, &opt_[i].v};
    for (int j = 0; j < 3; ++j) {
      const auto& src = values[i * 3 + j];
      RETURN_IF_ERROR(be.CopyFromHost(src.data(), src.size() * sizeof(float), *dst[j]));
    }
    RETURN_IF_ERROR(opt_[i].SyncParam(be, params_[i].value));
  }
  step_ = step;
  tokens_seen_ = tokens;
  order_->Restore({rng_state, epoch, index});
  initial_val_loss_ = ParseDouble(s_init);
  losses_ = std::move(losses);
  val_losses_ = std::move(val_losses);
  best_step_ = best_step;
  best_val_ = best_val;
  evals_since_best_ = evals_since_best;
  stopped_early_ = best_step >= 0 && stopped_early;
  best_params_.clear();
  for (size_t i = 0; i < best_values.size(); ++i) {
    ASSIGN_OR_RETURN(Tensor host, be.FromHost(best_values[i], params_[i].value.shape()));
    ASSIGN_OR_RETURN(Tensor copy, be.Alloc(params_[i].value.shape(), params_[i].value.dtype()));
    RETURN_IF_ERROR(be.Copy(host, copy));  // to the parameter's dtype (bf16 values round-trip exactly)
    best_params_.push_back(std::move(copy));
  }
  return absl::OkStatus();
}

}  // namespace tessera::train
