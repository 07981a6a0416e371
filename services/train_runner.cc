#include "services/train_runner.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "core/data/jsonl_dataset.h"
#include "core/model/overlay.h"
#include "core/train/artifact.h"
#include "core/train/expert_selection.h"
#include "core/model/lora_overlay.h"
#include "core/train/lora_finetune.h"
#include "core/train/general_ability.h"
#include "core/train/model_trainable.h"
#include "core/train/trainer.h"

namespace tessera::services {
namespace {

absl::StatusOr<std::vector<data::TokenizedExample>> ParseDataset(JobContext& ctx, const TextCodec& codec,
                                                                 const std::string& id, const char* field) {
  absl::StatusOr<std::string> bytes = ctx.ReadDataset(id);
  if (!bytes.ok()) return absl::Status(bytes.status().code(), absl::StrCat(field, " ", id, ": ", bytes.status().message()));
  absl::StatusOr<data::ParsedDataset> parsed = codec.ParseDataset(*bytes);
  if (!parsed.ok()) return absl::Status(parsed.status().code(), absl::StrCat(field, " ", id, ": ", parsed.status().message()));
  return std::move(parsed->examples);
}

absl::Status WriteFile(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InternalError(absl::StrCat("cannot read ", path));
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<tessera::SlotId> ToCore(const std::vector<services::SlotId>& slots) {
  std::vector<tessera::SlotId> out;
  for (const auto& s : slots) out.push_back({s.layer, s.expert});
  return out;
}
std::vector<services::SlotId> FromCore(const std::vector<tessera::SlotId>& slots) {
  std::vector<services::SlotId> out;
  for (const auto& s : slots) out.push_back({s.layer, s.expert});
  return out;
}

}  // namespace

absl::StatusOr<double> MeanTargetLoss(const Model& model, const ExpertOverlay* overlay,
                                      const std::vector<data::TokenizedExample>& examples, int64_t seq_len,
                                      int64_t max_examples) {
  double sum = 0;
  int64_t count = 0;
  const int64_t n = std::min<int64_t>(max_examples, examples.size());
  for (int64_t i = 0; i < n; ++i) {
    const data::TokenizedExample& ex = examples[i];
    int64_t len = std::min<int64_t>(seq_len, ex.tokens.size());
    if (len < 2) continue;
    SequenceInput seq;
    seq.tokens = absl::MakeConstSpan(ex.tokens.data(), len);
    seq.overlay = overlay;
    absl::StatusOr<std::vector<std::vector<float>>> lp = model.ScoreTokens(absl::MakeConstSpan(&seq, 1));
    if (!lp.ok()) return lp.status();
    for (int64_t t = 0; t + 1 < len; ++t) {
      if (ex.loss_mask[t + 1]) {
        sum -= (*lp)[0][t];
        ++count;
      }
    }
  }
  if (count == 0) return absl::FailedPreconditionError("the validation data has no target tokens within seq_len");
  return sum / count;
}

absl::StatusOr<JobOutput> CoreJobRunner::Run(JobContext& ctx) {
  absl::StatusOr<JobOutput> out = Train(ctx);
  if (out.status().code() == absl::StatusCode::kResourceExhausted) {
    // The job's error is what a tenant reads: say what ran out and what to change.
    return absl::ResourceExhaustedError(absl::StrCat(
        "out of memory: this job needs more device memory than ",
        memory_limit_bytes_ > 0 ? "it may use (reduce batch_size or seq_len, or raise the server's "
                                  "--train-memory-limit-bytes): "
                                : "the device has free (reduce batch_size or seq_len): ",
        out.status().message()));
  }
  return out;
}

absl::StatusOr<JobOutput> CoreJobRunner::Train(JobContext& ctx) {
  const JobSpec& spec = ctx.spec();
  const storage::Job& job = ctx.job();
  auto state = std::make_shared<JobState>();
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_[job.job_id] = state;
  }
  absl::StatusOr<std::shared_ptr<const SharedBackbone>> backbone = backbone_();
  if (!backbone.ok()) return backbone.status();
  // Joint mode: the job's turn in its loop, from here (every use of the loop's backend below runs in it)
  // until it returns; destroyed after the trainer (declared before it).
  std::unique_ptr<train::JointMember> member;
  if (joint_ != nullptr) {
    absl::StatusOr<std::unique_ptr<JointLoops::Lease>> lease = joint_->Acquire(*std::move(backbone));
    if (!lease.ok()) return lease.status();
    state->loop = *std::move(lease);
    state->model = state->loop->loop().model;
    member = state->loop->loop().group->Join();
  } else {
    // A backend (stream) of the job's own over the shared backbone weights: serving keeps its own. Token
    // ids and targets come from the tokenizer (checked against the vocabulary by Forward), every other
    // index from the model's routing: no synchronizing range check per gather/scatter (see BackendOptions).
    BackendOptions job_backend;
    job_backend.eager_index_checks = false;
    job_backend.memory_limit_bytes = memory_limit_bytes_;
    job_backend.pool_host_buffers = true;  // the job's memory goes back to the OS when it ends (host_buffer_pool.h)
    absl::StatusOr<std::unique_ptr<LoadedModel>> loaded = ModelOn(*std::move(backbone), job_backend);
    if (!loaded.ok()) return loaded.status();
    state->model = *std::move(loaded);
  }
  const Model& model = *state->model->model;
  const ModelConfig& config = model.config();
  Backend* backend = state->model->backend.get();
  state->seq_len = spec.seq_len;

  absl::StatusOr<std::vector<data::TokenizedExample>> train = ParseDataset(ctx, *codec_, job.training_dataset_id, "training dataset");
  if (!train.ok()) return train.status();
  std::vector<data::TokenizedExample> validation;
  if (!job.validation_dataset_id.empty()) {
    absl::StatusOr<std::vector<data::TokenizedExample>> v = ParseDataset(ctx, *codec_, job.validation_dataset_id, "validation dataset");
    if (!v.ok()) return v.status();
    validation = *std::move(v);
  }

  // The starting point (kept pristine for base_val_loss) and a fresh copy of it to train from. A LoRA
  // version is merged when loaded (core/model/lora_overlay.h), as the runtime serves it; a LoRA job also
  // keeps it as factors (lora_start) to continue them.
  std::shared_ptr<const ExpertOverlay> base_overlay;
  std::map<tessera::SlotId, ExpertWeights> working;
  const bool lora = spec.method == "lora";
  LoraAdapter lora_start;
  if (spec.base_version > 0) {
    absl::StatusOr<std::string> bytes = ctx.ReadVersionWeights(spec.base_version, state->model->info.sha256);
    if (!bytes.ok()) return bytes.status();
    const DType dtype = model.weights().matrix_dtype();
    absl::StatusOr<std::shared_ptr<const ExpertOverlay>> b =
        LoadVersionOverlay(config, *bytes, &model.weights(), backend, "", dtype);
    if (!b.ok()) return b.status();
    base_overlay = *b;
    if (lora) {
      absl::StatusOr<LoraAdapter> start = IsLoraBlob(*bytes)
                                              ? LoraAdapter::Parse(config, *bytes)
                                              : LoraAdapter::FromDenseOverlay(**b, backend, 0, 0);
      if (!start.ok()) return start.status();
      lora_start = *std::move(start);
    } else {
      absl::StatusOr<std::shared_ptr<const ExpertOverlay>> copy =
          LoadVersionOverlay(config, *bytes, &model.weights(), backend, "", dtype);
      if (!copy.ok()) return copy.status();
      working = (*copy)->slots();
    }
  }

  // Expert selection (a retry reuses the first attempt's slots).
  std::vector<tessera::SlotId> selected;
  absl::StatusOr<std::vector<services::SlotId>> recorded = SlotsFromJson(job.selected_slots);
  if (recorded.ok() && !recorded->empty()) {
    selected = ToCore(*recorded);
    ctx.Log(absl::StrCat("resuming attempt ", job.attempts, " with the recorded slots"));
  } else if (spec.auto_select) {
    train::SelectionOptions so;
    so.threshold = spec.relevance_threshold;
    so.max_experts = spec.max_experts;
    absl::StatusOr<train::ExpertSelection> sel = train::SelectExpertsAuto(model, *train, so, base_overlay.get());
    if (!sel.ok()) return sel.status();
    selected = sel->slots;
    std::vector<double> scores;
    for (const tessera::SlotId& s : selected) {
      for (const train::SlotScore& sc : sel->scores) {
        if (sc.slot == s) scores.push_back(sc.score);
      }
    }
    ctx.ReportSelection(FromCore(selected), scores);
  } else {
    selected = ToCore(spec.slots);
    if (absl::Status s = train::ValidateExplicitSlots(config, selected); !s.ok()) return s;
    ctx.ReportSelection(FromCore(selected), {});
  }
  if (selected.empty()) return absl::FailedPreconditionError("expert selection chose no slots");
  // The trainable model: LoRA (method "lora") factors on the selected slots, else the selected slots' full
  // weights; alone, the trainable itself; joint, the job's member of its loop holding it (the same
  // parameters and gradients).
  std::unique_ptr<train::TrainableLm> solo;
  train::TrainableLm* trainable = member.get();
  train::LoraTrainable* lora_trainable = nullptr;
  absl::StatusOr<std::shared_ptr<const ExpertOverlay>> overlay = absl::UnknownError("unset");
  if (lora) {
    train::LoraOptions lo;
    lo.rank = spec.lora_rank;
    const bool rank_auto =
        std::find(spec.auto_fields.begin(), spec.auto_fields.end(), "lora_rank") != spec.auto_fields.end();
    if (!lora_start.factors.empty() && lora_start.rank != lo.rank) {
      if (!rank_auto) {
        return absl::FailedPreconditionError(absl::StrCat(
            "lora_rank: base_version ", spec.base_version, " is a LoRA version of rank ", lora_start.rank,
            "; continue it with lora_rank ", lora_start.rank, " (or leave lora_rank unset), got ", lo.rank));
      }
      lo.rank = lora_start.rank;
      ctx.Log(absl::StrCat("lora_rank ", lo.rank, " (auto): the rank of base_version ", spec.base_version));
    }
    lo.alpha = kLoraScale * static_cast<double>(lo.rank);
    lo.seed = spec.seed;
    absl::StatusOr<std::unique_ptr<train::LoraTrainable>> t =
        train::LoraTrainable::Create(&model, lora_start, selected, lo);
    if (!t.ok()) return t.status();
    lora_trainable = t->get();
    overlay = lora_trainable->MergedOverlay();
    if (!overlay.ok()) return overlay.status();
    if (member != nullptr) {
      if (absl::Status s = member->SetLora(*std::move(t)); !s.ok()) return s;
    } else {
      solo = *std::move(t);
      trainable = solo.get();
    }
  } else {
    std::vector<tessera::SlotId> fresh;
    for (const tessera::SlotId& s : selected) {
      if (working.count(s) == 0) fresh.push_back(s);
    }
    if (!fresh.empty()) {
      absl::StatusOr<std::shared_ptr<const ExpertOverlay>> c = ExpertOverlay::CopyOfBase(config, model.weights(), fresh, backend);
      if (!c.ok()) return c.status();
      for (const auto& [slot, w] : (*c)->slots()) working[slot] = w;
    }
    overlay = ExpertOverlay::FromWeights(config, working, backend);
    if (!overlay.ok()) return overlay.status();
    if (member != nullptr) {
      if (absl::Status s = member->SetTrainable(*overlay, selected); !s.ok()) return s;
    } else {
      absl::StatusOr<std::unique_ptr<train::ModelTrainable>> t = train::ModelTrainable::ForExperts(&model, *overlay, selected);
      if (!t.ok()) return t.status();
      solo = *std::move(t);
      trainable = solo.get();
    }
  }
  train::TrainerOptions to;
  to.max_steps = spec.max_steps;
  to.batch_size = spec.batch_size;
  to.seq_len = spec.seq_len;
  to.learning_rate = spec.learning_rate;
  to.warmup_steps = spec.warmup_steps;
  to.weight_decay = spec.weight_decay;
  to.seed = spec.seed;
  to.eval_every = spec.eval_every > 0 ? spec.eval_every : std::max<int64_t>(1, spec.max_steps / 5);
  to.early_stopping_patience = spec.early_stopping_patience;
  to.early_stopping_min_delta = spec.early_stopping_min_delta;
  to.restore_best = spec.keep_best;
  {
    // What the job runs with (a WatchJob "log" event): the auto rule's choices are marked.
    auto mark = [&](const char* field) {
      return std::find(spec.auto_fields.begin(), spec.auto_fields.end(), field) != spec.auto_fields.end()
                 ? " (auto)" : "";
    };
    std::string line = absl::StrCat(
        "hyperparameters: max_steps=", spec.max_steps, mark("max_steps"), " batch_size=", spec.batch_size,
        mark("batch_size"), " learning_rate=", spec.learning_rate, mark("learning_rate"),
        " warmup_steps=", spec.warmup_steps, mark("warmup_steps"), " eval_every=", to.eval_every,
        " early_stopping_patience=", to.early_stopping_patience, " keep_best=", to.restore_best ? "true" : "false");
    absl::StrAppend(&line, " method=", spec.method);
    if (lora_trainable != nullptr) {
      absl::StrAppend(&line, " lora_rank=", lora_trainable->options().rank, mark("lora_rank"),
                      " lora_alpha=", lora_trainable->options().alpha);
    }
    if (spec.auto_select) {
      absl::StrAppend(&line, " relevance_threshold=", spec.relevance_threshold, mark("relevance_threshold"),
                      " max_experts=", spec.max_experts, mark("max_experts"));
    }
    ctx.Log(line);
  }
  absl::StatusOr<std::unique_ptr<train::Trainer>> trainer =
      train::Trainer::Create(trainable, *train, validation, to);
  if (!trainer.ok()) return trainer.status();
  state->validation = (*trainer)->validation_set();

  std::filesystem::create_directories(work_dir_);
  const std::string ckpt_path = absl::StrCat(work_dir_, "/", job.job_id, ".ckpt");
  absl::StatusOr<std::optional<std::string>> resume = ctx.LoadCheckpoint();
  if (resume.ok() && resume->has_value()) {
    if (absl::Status s = WriteFile(ckpt_path, **resume); !s.ok()) return s;
    absl::Status s = (*trainer)->RestoreCheckpoint(ckpt_path);
    if (s.ok()) {
      ctx.Log(absl::StrCat("resumed from the checkpoint at step ", (*trainer)->step()));
    } else {
      ctx.Log(absl::StrCat("checkpoint not usable (", s.message(), "); starting over"));
    }
  }

  absl::StatusOr<double> base_loss = MeanTargetLoss(model, base_overlay.get(), state->validation, spec.seq_len);
  if (!base_loss.ok()) return base_loss.status();

  std::atomic<bool> cancel{false};
  double last_val = 0;
  train::RunControls controls;
  controls.cancel = &cancel;
  controls.on_progress = [&](const train::TrainProgress& p) {
    if (!std::isnan(p.val_loss)) {
      last_val = p.val_loss;
      ctx.ReportEval(p.step, p.val_loss, *base_loss);
    }
    storage::JobProgress jp;
    jp.step = p.step;
    jp.max_steps = p.max_steps;
    jp.train_loss = p.loss;
    jp.val_loss = last_val;
    jp.tokens_per_second = p.tokens_per_second;
    ctx.ReportProgress(jp);
    if (ctx.ShouldStop()) cancel.store(true);
  };
  const int64_t ckpt_every = std::max<int64_t>(10, spec.max_steps / 4);
  absl::StatusOr<train::TrainResult> result;
  do {
    controls.stop_after_step = std::min(spec.max_steps, ((*trainer)->step() / ckpt_every + 1) * ckpt_every);
    result = (*trainer)->Run(controls);
    if (!result.ok()) {
      std::filesystem::remove(ckpt_path);
      return result.status();
    }
    if (!result->finished) {
      if (absl::Status s = (*trainer)->SaveCheckpoint(ckpt_path); s.ok()) {
        absl::StatusOr<std::string> bytes = ReadFile(ckpt_path);
        if (bytes.ok()) (void)ctx.SaveCheckpoint(*bytes);
      }
    }
  } while (!result->finished);
  std::filesystem::remove(ckpt_path);
  if (result->stopped_early) {
    ctx.Log(absl::StrCat("early stopping: no validation improvement in ", spec.early_stopping_patience,
                         " evaluations; stopped at step ", result->steps, " of ", spec.max_steps));
  }
  if (spec.keep_best) {
    ctx.Log(absl::StrCat("the version is the best validation checkpoint: step ", result->best_step,
                         " (val_loss ", result->best_val_loss, ")"));
  }

  if (lora_trainable != nullptr) {
    overlay = lora_trainable->MergedOverlay();  // W' from the final (or best) factors
    if (!overlay.ok()) return overlay.status();
  }
  absl::StatusOr<double> val_loss = MeanTargetLoss(model, overlay->get(), state->validation, spec.seq_len);
  if (!val_loss.ok()) return val_loss.status();
  train::ArtifactInfo info;
  info.trained_slots = selected;
  info.backbone_sha256 = state->model->info.sha256;
  info.steps = (*trainer)->step();
  info.seed = spec.seed;
  info.metrics = {{"val_loss", *val_loss}, {"base_val_loss", *base_loss},
                  {"train_loss", result->final_train_loss}};
  info.extra = {{"job_id", job.job_id},
                {"tenant_id", job.tenant_id},
                {"hyperparameters", spec.ToJson()},  // with auto_fields: what the auto rule chose
                {"best_step", absl::StrCat(result->best_step)},
                {"stopped_early", result->stopped_early ? "true" : "false"}};
  JobOutput out;
  absl::StatusOr<std::string> blob = absl::UnknownError("unset");
  if (lora_trainable != nullptr) {
    absl::StatusOr<LoraAdapter> adapter = lora_trainable->Adapter();
    if (!adapter.ok()) return adapter.status();
    blob = train::SerializeLoraArtifact(config, *adapter, info);
    out.method = "lora";
    out.lora_rank = adapter->rank;
  } else {
    blob = train::SerializeExpertArtifact(**overlay, info);
    out.method = "esft";
  }
  if (!blob.ok()) return blob.status();
  if (general_text_ != nullptr && !general_text_->empty()) {
    train::GeneralAbilityData general;
    general.text = *general_text_;
    general.seq_len = spec.seq_len;
    absl::StatusOr<train::GeneralAbility> backbone_ga = train::EvaluateGeneralAbility(model, nullptr, general);
    if (!backbone_ga.ok()) return backbone_ga.status();
    absl::StatusOr<train::GeneralAbility> result_ga = train::EvaluateGeneralAbility(model, overlay->get(), general);
    if (!result_ga.ok()) return result_ga.status();
    out.general_loss = result_ga->loss;
    out.base_general_loss = backbone_ga->loss;
    ctx.Log(absl::StrCat("general ability: loss ", result_ga->loss, " (backbone ", backbone_ga->loss,
                         "), token accuracy ", result_ga->token_accuracy, " (backbone ",
                         backbone_ga->token_accuracy, ") on ", result_ga->tokens, " tokens"));
  }
  out.weights = *std::move(blob);
  out.slots = FromCore((*overlay)->SlotIds());
  out.val_loss = *val_loss;
  out.base_val_loss = *base_loss;
  out.backbone_sha256 = state->model->info.sha256;
  return out;
}

absl::StatusOr<double> CoreJobRunner::EvaluateVersion(JobContext& ctx, int64_t version) {
  std::shared_ptr<JobState> state;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(ctx.job().job_id);
    if (it == jobs_.end() || !it->second->model) {
      return absl::FailedPreconditionError("EvaluateVersion needs a finished Run of the same job");
    }
    state = it->second;
  }
  // Joint mode: the loop's backend is the other jobs' too; evaluate in a turn of this job's.
  std::unique_ptr<train::JointMember> turn;
  if (state->loop != nullptr) turn = state->loop->loop().group->Join();
  std::shared_ptr<const ExpertOverlay> overlay;
  if (version > 0) {
    absl::StatusOr<std::string> bytes = ctx.ReadVersionWeights(version, state->model->info.sha256);
    if (!bytes.ok()) return bytes.status();
    absl::StatusOr<std::shared_ptr<const ExpertOverlay>> o =
        LoadVersionOverlay(state->model->model->config(), *bytes, &state->model->model->weights(),
                           state->model->backend.get(), "", state->model->model->weights().matrix_dtype());
    if (!o.ok()) return o.status();
    overlay = *o;
  }
  return MeanTargetLoss(*state->model->model, overlay.get(), state->validation, state->seq_len);
}

void CoreJobRunner::Release(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  jobs_.erase(job_id);
}

}  // namespace tessera::services
