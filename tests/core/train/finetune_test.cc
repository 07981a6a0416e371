// Expert-only fine-tuning on a small random MoE model: only the chosen slots change, the backbone and
// other tenants' overlays are bitwise untouched, the artifact holds exactly the overlay's slots, and a
// checkpointed, interrupted run resumes to the same losses. Also full-parameter training.
#include "core/train/finetune.h"

#include <atomic>
#include <cmath>
#include <filesystem>

#include "core/data/rng.h"
#include "core/io/safetensors.h"
#include "core/train/artifact.h"
#include "core/train/model_trainable.h"
#include "gtest/gtest.h"
#include "tests/core/train/test_models.h"

namespace tessera::train {
namespace {

using testing::SmallMoeConfig;

// prompt [30, a, b, 31] -> completion [p(a), p(b), 31]: loss on the completion only.
std::vector<data::TokenizedExample> PermutationData(int n, uint64_t seed) {
  data::Rng rng(seed);
  std::vector<data::TokenizedExample> out;
  for (int i = 0; i < n; ++i) {
    int a = static_cast<int>(rng.Uniform(30)), b = static_cast<int>(rng.Uniform(30));
    data::TokenizedExample e;
    e.tokens = {30, a, b, 31, (7 * a + 3) % 30, (7 * b + 3) % 30, 31};
    e.loss_mask = {0, 0, 0, 0, 1, 1, 1};
    e.prompt_tokens = 4;
    out.push_back(e);
  }
  return out;
}

std::vector<float> AllWeights(Backend* be, const Model& m) {
  std::vector<float> out;
  ModelWeights w = m.weights();
  for (const NamedParam& p : w.Parameters(m.config())) {
    auto v = *be->ToHostF32(*p.tensor);
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

std::vector<float> ProbeLogits(const Model& m, const ExpertOverlay* overlay) {
  std::vector<int32_t> toks = {30, 4, 9, 31, 1, 2, 3, 17, 22, 8};
  SequenceInput in{absl::MakeConstSpan(toks), overlay, nullptr};
  ForwardOptions o;
  o.logits = LogitsMode::kAll;
  auto r = m.Forward({&in, 1}, o);
  EXPECT_TRUE(r.ok()) << r.status();
  return *m.backend()->ToHostF32(r->logits);
}

TrainerOptions FtOptions() {
  TrainerOptions o;
  o.max_steps = 24;
  o.batch_size = 16;
  o.learning_rate = 1e-2;
  o.warmup_steps = 2;
  o.seed = 3;
  o.eval_every = 8;
  return o;
}

TEST(FineTuneTest, OnlyTheSlotsChangeAndEverythingElseIsBitwiseUnchanged) {
  auto be = MakeCpuBackend();
  ModelConfig c = SmallMoeConfig();
  auto model = *Model::Create(c, *ModelWeights::RandomInit(c, 11, be.get()), be.get());
  // Another tenant's overlay, made before the fine-tune.
  auto other = *ExpertOverlay::CopyOfBase(c, model->weights(), std::vector<SlotId>{{0, 1}, {1, 5}},
                                          be.get());
  ASSERT_TRUE(be->Scale(const_cast<Tensor&>(other->Find({0, 1})->up), 1.5f).ok());
  const auto base_weights = AllWeights(be.get(), *model);
  const auto base_logits = ProbeLogits(*model, nullptr);
  const auto other_logits = ProbeLogits(*model, other.get());

  FineTuneOptions o;
  o.trainer = FtOptions();
  o.auto_select = false;
  o.explicit_slots = {{1, 2}, {0, 5}, {1, 6}};
  auto r = FineTuneExperts(*model, "abc123", PermutationData(300, 1), {}, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->trained_slots, (std::vector<SlotId>{{0, 5}, {1, 2}, {1, 6}}));
  EXPECT_LT(r->train.final_val_loss, r->train.initial_val_loss - 0.05);
  EXPECT_EQ(r->trainable_parameters, 3 * c.ExpertParameters());
  EXPECT_EQ(r->optimizer_state_bytes, 2 * 4 * 3 * c.ExpertParameters());

  // The backbone and the other tenant are bitwise unchanged; the new overlay differs from the base.
  EXPECT_EQ(AllWeights(be.get(), *model), base_weights);
  EXPECT_EQ(ProbeLogits(*model, nullptr), base_logits);
  EXPECT_EQ(ProbeLogits(*model, other.get()), other_logits);
  EXPECT_NE(ProbeLogits(*model, r->overlay.get()), base_logits);
  auto base_gate = *be->ToHostF32(model->weights().layers[1].experts[2].gate);
  EXPECT_NE(*be->ToHostF32(r->overlay->Find({1, 2})->gate), base_gate);

  // The artifact: exactly the trained slots, HF names, metadata.
  auto file = io::SafetensorsFile::FromBytes(r->artifact);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->size(), 9u);
  EXPECT_NE((*file)->Find("model.layers.1.mlp.experts.2.gate_proj.weight"), nullptr);
  EXPECT_NE((*file)->Find("model.layers.0.mlp.experts.5.down_proj.weight"), nullptr);
  const auto& meta = (*file)->metadata();
  EXPECT_EQ(meta.at("slots"), "L0.E5,L1.E2,L1.E6");
  EXPECT_EQ(meta.at("trained_slots"), "L0.E5,L1.E2,L1.E6");
  EXPECT_EQ(meta.at("backbone_sha256"), "abc123");
  EXPECT_EQ(meta.at("steps"), "24");
  EXPECT_EQ(meta.at("seed"), "3");
  EXPECT_NE(meta.at("metrics").find("val_loss"), std::string::npos);
  auto reloaded = ExpertOverlay::FromSafetensors(c, r->artifact, be.get());
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(ProbeLogits(*model, reloaded->get()), ProbeLogits(*model, r->overlay.get()));
}

TEST(FineTuneTest, FrozenWeightsGetNoGradientBuffers) {
  auto be = MakeCpuBackend();
  ModelConfig c = SmallMoeConfig();
  auto model = *Model::Create(c, *ModelWeights::RandomInit(c, 11, be.get()), be.get());
  auto overlay = *MakeTrainingOverlay(*model, {{0, 0}, {1, 3}}, nullptr);
  auto t = ModelTrainable::ForExperts(model.get(), overlay, {{0, 0}, {1, 3}});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->Parameters().size(), 6u);
  EXPECT_EQ((*t)->gradient_bytes(), 2 * c.ExpertParameters() * 4);
  // A trainable slot the overlay does not hold, or out of range, is refused.
  EXPECT_EQ(ModelTrainable::ForExperts(model.get(), overlay, {{0, 1}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeTrainingOverlay(*model, {{0, 8}}, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The same model with FlatGradients() hidden, so the Trainer zeroes and clips per parameter.
class PerParameterGradients : public TrainableLm {
 public:
  explicit PerParameterGradients(TrainableLm* inner) : inner_(inner) {}
  Backend& backend() override { return inner_->backend(); }
  int64_t vocab_size() const override { return inner_->vocab_size(); }
  absl::StatusOr<Tensor> Forward(absl::Span<const std::vector<int32_t>> seqs, bool training) override {
    return inner_->Forward(seqs, training);
  }
  absl::Status Backward(const Tensor& dlogits) override { return inner_->Backward(dlogits); }
  std::vector<TrainParam> Parameters() override { return inner_->Parameters(); }

 private:
  TrainableLm* inner_;
};

// Expert training zeroes, measures and clips its gradients through one flat buffer; with clipping active
// on every step it trains exactly like the per-parameter path (up to the order of the norm's sum).
TEST(FineTuneTest, FlatGradientsTrainLikePerParameterGradients) {
  auto be = MakeCpuBackend();
  ModelConfig c = SmallMoeConfig();
  auto model = *Model::Create(c, *ModelWeights::RandomInit(c, 11, be.get()), be.get());
  const std::vector<SlotId> slots = {{0, 2}, {1, 1}, {1, 6}};
  auto flat = *ModelTrainable::ForExperts(model.get(), *MakeTrainingOverlay(*model, slots, nullptr), slots);
  auto separate = *ModelTrainable::ForExperts(model.get(), *MakeTrainingOverlay(*model, slots, nullptr), slots);
  ASSERT_TRUE(flat->FlatGradients().defined());
  PerParameterGradients hidden(separate.get());
  TrainerOptions o = FtOptions();
  o.max_steps = 8;
  o.max_grad_norm = 1e-3;  // below every step's norm (>= 3e-3 here): the clipping path runs each step
  std::vector<std::vector<double>> norms(2);
  std::vector<std::vector<double>> losses;
  TrainableLm* models[] = {flat.get(), &hidden};
  for (int i = 0; i < 2; ++i) {
    auto t = Trainer::Create(models[i], PermutationData(64, 9), {}, o);
    ASSERT_TRUE(t.ok()) << t.status();
    RunControls rc;
    rc.on_progress = [&](const TrainProgress& p) { norms[i].push_back(p.grad_norm); };
    ASSERT_TRUE((*t)->Run(rc).ok());
    losses.push_back((*t)->losses());
  }
  ASSERT_EQ(norms[0].size(), 8u);
  for (size_t s = 0; s < norms[0].size(); ++s) {
    EXPECT_GT(norms[0][s], o.max_grad_norm) << "step " << s + 1;
    EXPECT_NEAR(norms[0][s], norms[1][s], 1e-5 * norms[1][s]) << "step " << s + 1;
    EXPECT_NEAR(losses[0][s], losses[1][s], 1e-5 * losses[1][s]) << "step " << s + 1;
  }
  for (SlotId slot : slots) {
    const auto a = *be->ToHostF32(flat->overlay()->Find(slot)->down);
    const auto b = *be->ToHostF32(separate->overlay()->Find(slot)->down);
    for (size_t j = 0; j < a.size(); ++j) ASSERT_NEAR(a[j], b[j], 1e-5 * (1 + std::fabs(b[j]))) << slot.ToString();
  }
}

TEST(FineTuneTest, ContinuingFromABaseVersionCarriesItsSlots) {
  auto be = MakeCpuBackend();
  ModelConfig c = SmallMoeConfig();
  auto model = *Model::Create(c, *ModelWeights::RandomInit(c, 11, be.get()), be.get());
  FineTuneOptions o;
  o.trainer = FtOptions();
  o.trainer.max_steps = 4;
  o.auto_select = false;
  o.explicit_slots = {{0, 1}, {1, 1}};
  auto v1 = FineTuneExperts(*model, "sha", PermutationData(100, 1), {}, o);
  ASSERT_TRUE(v1.ok()) << v1.status();
  const auto v1_logits = ProbeLogits(*model, v1->overlay.get());
  o.explicit_slots = {{1, 1}, {1, 4}};
  auto v2 = FineTuneExperts(*model, "sha", PermutationData(100, 2), {}, o, v1->overlay);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(v2->overlay->SlotIds(), (std::vector<SlotId>{{0, 1}, {1, 1}, {1, 4}}));
  // Carried slot: v1's weights; the continued slot started from v1's and moved; v1 itself unchanged.
  EXPECT_EQ(*be->ToHostF32(v2->overlay->Find({0, 1})->up), *be->ToHostF32(v1->overlay->Find({0, 1})->up));
  EXPECT_NE(*be->ToHostF32(v2->overlay->Find({1, 1})->up), *be->ToHostF32(v1->overlay->Find({1, 1})->up));
  EXPECT_EQ(ProbeLogits(*model, v1->overlay.get()), v1_logits);
  auto file = *io::SafetensorsFile::FromBytes(v2->artifact);
  EXPECT_EQ(file->metadata().at("slots"), "L0.E1,L1.E1,L1.E4");
  EXPECT_EQ(file->metadata().at("trained_slots"), "L1.E1,L1.E4");
}

TEST(FineTuneTest, CancelledRunResumesFromItsCheckpointToTheSameLosses) {
  auto be = MakeCpuBackend();
  ModelConfig c = SmallMoeConfig();
  auto model = *Model::Create(c, *ModelWeights::RandomInit(c, 11, be.get()), be.get());
  FineTuneOptions o;
  o.trainer = FtOptions();
  o.trainer.max_steps = 12;
  o.auto_select = false;
  o.explicit_slots = {{0, 3}, {1, 0}};
  auto data = PermutationData(100, 4);
  auto full = FineTuneExperts(*model, "sha", data, {}, o);
  ASSERT_TRUE(full.ok());

  o.checkpoint_path = (std::filesystem::temp_directory_path() /
                       ("ft_ckpt_" + std::to_string(::getpid()))).string();
  o.checkpoint_every = 4;
  std::atomic<bool> cancel{false};
  RunControls rc;
  rc.cancel = &cancel;
  rc.on_progress = [&](const TrainProgress& p) {
    if (p.step == 6) cancel = true;
  };
  auto first = FineTuneExperts(*model, "sha", data, {}, o, nullptr, rc);
  EXPECT_EQ(first.status().code(), absl::StatusCode::kCancelled);
  auto resumed = FineTuneExperts(*model, "sha", data, {}, o);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->losses, full->losses);
  EXPECT_EQ(ProbeLogits(*model, resumed->overlay.get()), ProbeLogits(*model, full->overlay.get()));
  std::filesystem::remove(o.checkpoint_path);
}

// A job with early stopping and the best checkpoint, cancelled after its best validation and resumed
// from the checkpoint, publishes the same version (artifact bytes) as the uninterrupted job: the best
// parameters' snapshot was saved with the checkpoint.
TEST(FineTuneTest, ResumedRunPublishesTheBestVersionAcrossTheRestart) {
  auto be = MakeCpuBackend();
  ModelConfig c = SmallMoeConfig();
  auto model = *Model::Create(c, *ModelWeights::RandomInit(c, 11, be.get()), be.get());
  FineTuneOptions o;
  o.trainer = FtOptions();
  o.trainer.max_steps = 200;
  o.trainer.eval_every = 2;
  o.trainer.learning_rate = 5e-2;
  o.trainer.early_stopping_patience = 3;
  o.trainer.restore_best = true;
  o.auto_select = false;
  o.explicit_slots = {{0, 3}, {1, 0}};
  // Validation mixes in another permutation, so its loss falls, then rises as training commits.
  auto train = PermutationData(100, 4);
  auto validation = PermutationData(20, 5);
  for (auto e : PermutationData(40, 6)) {
    for (int j = 4; j < 6; ++j) e.tokens[j] = (11 * e.tokens[j] + 5) % 30;
    validation.push_back(e);
  }
  auto full = FineTuneExperts(*model, "sha", train, validation, o);
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_TRUE(full->train.stopped_early);
  ASSERT_LT(full->train.best_step + 1, full->train.steps) << "the best must come before the end";

  o.checkpoint_path = (std::filesystem::temp_directory_path() /
                       ("ft_best_ckpt_" + std::to_string(::getpid()))).string();
  o.checkpoint_every = 2;
  std::atomic<bool> cancel{false};
  RunControls rc;
  rc.cancel = &cancel;
  const int64_t stop = full->train.best_step + 1;
  rc.on_progress = [&](const TrainProgress& p) {
    if (p.step == stop) cancel = true;
  };
  auto first = FineTuneExperts(*model, "sha", train, validation, o, nullptr, rc);
  EXPECT_EQ(first.status().code(), absl::StatusCode::kCancelled);
  auto resumed = FineTuneExperts(*model, "sha", train, validation, o);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->train.best_step, full->train.best_step);
  EXPECT_EQ(resumed->train.steps, full->train.steps);
  EXPECT_EQ(resumed->train.final_val_loss, full->train.final_val_loss);
  EXPECT_EQ(ProbeLogits(*model, resumed->overlay.get()), ProbeLogits(*model, full->overlay.get()));
  EXPECT_EQ(resumed->artifact, full->artifact);
  std::filesystem::remove(o.checkpoint_path);
}

TEST(FineTuneTest, FullParameterTrainingReducesLoss) {
  auto be = MakeCpuBackend();
  ModelConfig c = SmallMoeConfig();
  auto model = *Model::Create(c, *ModelWeights::RandomInit(c, 11, be.get()), be.get());
  auto t = ModelTrainable::ForAllParameters(model.get());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->Parameters().size(), model->mutable_weights().Parameters(c).size());
  TrainerOptions o = FtOptions();
  o.max_steps = 40;
  o.learning_rate = 5e-3;
  auto trainer = Trainer::Create(t->get(), PermutationData(300, 1), {}, o);
  ASSERT_TRUE(trainer.ok());
  auto r = (*trainer)->Run();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LT(r->final_val_loss, 0.8 * r->initial_val_loss);
  EXPECT_EQ(r->trainable_parameters, c.NumParameters());
}

}  // namespace
}  // namespace tessera::train
