#include "core/train/trainer.h"

#include <cmath>
#include <filesystem>

#include "core/data/rng.h"
#include "core/train/grad_clip.h"
#include "core/train/schedule.h"
#include "gtest/gtest.h"
#include "tests/core/train/tiny_lm.h"

namespace tessera::train {
namespace {

using testing::TinyLm;

// Sequences from a deterministic rule (next = (3 * t + 1) mod V) with a prompt part that is masked.
std::vector<data::TokenizedExample> RuleData(int n, int vocab, uint64_t seed) {
  data::Rng rng(seed);
  std::vector<data::TokenizedExample> out;
  for (int i = 0; i < n; ++i) {
    data::TokenizedExample e;
    int t = static_cast<int>(rng.Uniform(vocab));
    int len = static_cast<int>(rng.Range(4, 12));
    for (int j = 0; j < len; ++j) {
      e.tokens.push_back(t);
      e.loss_mask.push_back(j >= 2);
      t = (3 * t + 1) % vocab;
    }
    e.prompt_tokens = 2;
    out.push_back(std::move(e));
  }
  return out;
}

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() / (name + std::to_string(::getpid()))).string();
}

TEST(ScheduleTest, WarmupThenCosineToFloor) {
  LrSchedule s{1.0, 10, 110, 0.1};
  EXPECT_DOUBLE_EQ(s.At(1), 0.1);
  EXPECT_DOUBLE_EQ(s.At(5), 0.5);
  EXPECT_DOUBLE_EQ(s.At(10), 1.0);
  EXPECT_NEAR(s.At(60), 0.1 + 0.9 * 0.5, 1e-12);  // halfway through the cosine
  EXPECT_NEAR(s.At(110), 0.1, 1e-12);
  EXPECT_NEAR(s.At(500), 0.1, 1e-12);
  for (int i = 11; i < 110; ++i) EXPECT_LE(s.At(i + 1), s.At(i));
  LrSchedule no_warmup{2.0, 0, 100, 0.0};
  EXPECT_NEAR(no_warmup.At(1), 2.0 * 0.5 * (1 + std::cos(M_PI * 0.01)), 1e-12);
}

TEST(GradClipTest, ScalesToMaxNormAndReportsPreClipNorm) {
  auto be = MakeCpuBackend();
  Tensor a = *be->FromHost(std::vector<float>{3, 0}, {2});
  Tensor b = *be->FromHost(std::vector<float>{0, 4, 0}, {3});
  std::vector<Tensor*> g = {&a, &b};
  auto norm = ClipGradNorm(*be, g, 1.0);
  ASSERT_TRUE(norm.ok());
  EXPECT_NEAR(*norm, 5.0, 1e-9);
  auto ha = *be->ToHostF32(a), hb = *be->ToHostF32(b);
  EXPECT_NEAR(ha[0], 0.6, 1e-6);
  EXPECT_NEAR(hb[1], 0.8, 1e-6);
  // Below the threshold nothing changes.
  auto again = ClipGradNorm(*be, g, 10.0);
  EXPECT_NEAR(*again, 1.0, 1e-6);
  EXPECT_NEAR((*be->ToHostF32(a))[0], 0.6, 1e-6);
}

TrainerOptions SmallOptions() {
  TrainerOptions o;
  o.max_steps = 30;
  o.batch_size = 8;
  o.grad_accum_steps = 1;
  o.learning_rate = 0.05;
  o.warmup_steps = 3;
  o.seed = 5;
  o.eval_every = 10;
  o.max_grad_norm = 1.0;
  return o;
}

TEST(TrainerTest, TrainingReducesLossAndMaskedRowsGetNoLoss) {
  auto be = MakeCpuBackend();
  TinyLm lm(be.get(), 16, 8, 1);
  auto trainer = Trainer::Create(&lm, RuleData(200, 16, 2), {}, SmallOptions());
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  std::vector<TrainProgress> progress;
  RunControls c;
  c.on_progress = [&](const TrainProgress& p) { progress.push_back(p); };
  auto r = (*trainer)->Run(c);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->finished);
  ASSERT_EQ(progress.size(), 30u);
  EXPECT_EQ(progress[9].step, 10);
  EXPECT_FALSE(std::isnan(progress[9].val_loss));
  EXPECT_TRUE(std::isnan(progress[10].val_loss));
  EXPECT_GT(progress.back().tokens_per_second, 0);
  EXPECT_EQ(progress.back().eta_seconds, 0);
  EXPECT_LT(r->final_val_loss, 0.5 * r->initial_val_loss);
  EXPECT_LT(r->final_train_loss, (*trainer)->losses().front());
  EXPECT_EQ(r->trainable_parameters, 2 * 16 * 8);
  EXPECT_EQ((*trainer)->optimizer_state_bytes(), 2 * 2 * 16 * 8 * 4);
}

TEST(TrainerTest, LossIsMeanOverUnmaskedTokensComputedByHand) {
  auto be = MakeCpuBackend();
  TinyLm lm(be.get(), 8, 4, 3);
  // 70 examples: more than two evaluation forwards' worth (Trainer::kMaxEvalRows), the last one partial.
  auto data = RuleData(70, 8, 4);
  TrainerOptions o = SmallOptions();
  o.batch_size = 6;
  ASSERT_LT(Trainer::EvaluationRows(o.batch_size, o.seq_len, 8) * 2, 70);
  auto trainer = Trainer::Create(&lm, data, data, o);
  ASSERT_TRUE(trainer.ok());
  auto loss = (*trainer)->EvaluateLoss(data);
  ASSERT_TRUE(loss.ok());
  // Reference: plain loops over the same model.
  auto v = lm.Values();
  auto E = [&](int t, int d) { return v[t * 4 + d]; };
  auto O = [&](int t, int d) { return v[32 + t * 4 + d]; };
  double sum = 0;
  int count = 0;
  for (const auto& e : data) {
    for (size_t i = 0; i + 1 < e.tokens.size(); ++i) {
      if (!e.loss_mask[i + 1]) continue;
      double logits[8], mx = -1e30, z = 0;
      for (int k = 0; k < 8; ++k) {
        logits[k] = 0;
        for (int d = 0; d < 4; ++d) logits[k] += E(e.tokens[i], d) * O(k, d);
        mx = std::max(mx, logits[k]);
      }
      for (int k = 0; k < 8; ++k) z += std::exp(logits[k] - mx);
      sum += -(logits[e.tokens[i + 1]] - mx - std::log(z));
      ++count;
    }
  }
  EXPECT_NEAR(*loss, sum / count, 1e-5);
}

TEST(TrainerTest, EvaluationRowsStayWithinATrainingStepsLogitsOrASmallBudget) {
  // A large vocabulary: twice the micro-batch (logits + their gradient in a training step).
  EXPECT_EQ(Trainer::EvaluationRows(4, 256, 152000), 8);
  EXPECT_EQ(Trainer::EvaluationRows(0, 256, 152000), 2);
  // A small one: as many rows as kEvalLogitsBytes holds, at most kMaxEvalRows.
  EXPECT_EQ(Trainer::EvaluationRows(2, 128, 256), Trainer::kMaxEvalRows);
  const int64_t row_bytes = 256 * 4096 * 4;  // seq_len 256, vocab 4096: 4 MiB of logits per row
  EXPECT_EQ(Trainer::EvaluationRows(1, 256, 4096), Trainer::kEvalLogitsBytes / row_bytes);
  // Never fewer rows than the micro-batch's double, even past the budget.
  EXPECT_EQ(Trainer::EvaluationRows(40, 256, 256), 80);
}

TEST(TrainerTest, GradientAccumulationMatchesOneBigBatch) {
  auto be = MakeCpuBackend();
  auto data = RuleData(100, 16, 7);
  TrainerOptions o = SmallOptions();
  o.max_steps = 5;
  o.max_grad_norm = 0;  // clipping would also be equal, but keep the comparison on AdamW alone
  TinyLm a(be.get(), 16, 8, 1), b(be.get(), 16, 8, 1);
  auto ta = Trainer::Create(&a, data, {}, o);
  o.grad_accum_steps = 3;
  auto tb = Trainer::Create(&b, data, {}, o);
  ASSERT_TRUE(ta.ok() && tb.ok());
  ASSERT_TRUE((*ta)->Run().ok());
  ASSERT_TRUE((*tb)->Run().ok());
  for (int i = 0; i < 5; ++i) EXPECT_NEAR((*ta)->losses()[i], (*tb)->losses()[i], 1e-5);
  auto va = a.Values(), vb = b.Values();
  for (size_t i = 0; i < va.size(); ++i) EXPECT_NEAR(va[i], vb[i], 1e-4);
}

TEST(TrainerTest, DeterministicForASeed) {
  auto be = MakeCpuBackend();
  auto data = RuleData(100, 16, 7);
  TinyLm a(be.get(), 16, 8, 1), b(be.get(), 16, 8, 1), c(be.get(), 16, 8, 1);
  TrainerOptions o = SmallOptions();
  o.max_steps = 8;
  auto ta = Trainer::Create(&a, data, {}, o);
  auto tb = Trainer::Create(&b, data, {}, o);
  o.seed = 6;
  auto tc = Trainer::Create(&c, data, {}, o);
  ASSERT_TRUE((*ta)->Run().ok() && (*tb)->Run().ok() && (*tc)->Run().ok());
  EXPECT_EQ((*ta)->losses(), (*tb)->losses());
  EXPECT_EQ(a.Values(), b.Values());
  EXPECT_NE((*ta)->losses(), (*tc)->losses());
}

TEST(TrainerTest, ResumedRunEqualsUninterruptedRun) {
  auto be = MakeCpuBackend();
  auto data = RuleData(30, 16, 9);  // small: the resume crosses epoch boundaries
  TrainerOptions o = SmallOptions();
  o.max_steps = 20;
  o.eval_every = 4;
  TinyLm full(be.get(), 16, 8, 1);
  auto tf = Trainer::Create(&full, data, {}, o);
  ASSERT_TRUE((*tf)->Run().ok());

  const std::string path = TempPath("resume_ckpt");
  {
    TinyLm first(be.get(), 16, 8, 1);
    auto t1 = Trainer::Create(&first, data, {}, o);
    RunControls c;
    c.stop_after_step = 7;
    auto r = (*t1)->Run(c);
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r->finished);
    EXPECT_EQ(r->steps, 7);
    ASSERT_TRUE((*t1)->SaveCheckpoint(path).ok());
  }
  TinyLm second(be.get(), 16, 8, 1);  // fresh weights: the checkpoint must restore them
  auto t2 = Trainer::Create(&second, data, {}, o);
  ASSERT_TRUE((*t2)->RestoreCheckpoint(path).ok());
  EXPECT_EQ((*t2)->step(), 7);
  auto r2 = (*t2)->Run();
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_TRUE(r2->finished);
  ASSERT_EQ((*t2)->losses().size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ((*t2)->losses()[i], (*tf)->losses()[i]) << "step " << i + 1;
  for (int i = 0; i < 20; ++i) {
    double x = (*t2)->val_losses()[i], y = (*tf)->val_losses()[i];
    EXPECT_TRUE((std::isnan(x) && std::isnan(y)) || x == y) << i;
  }
  EXPECT_EQ(second.Values(), full.Values());

  // A checkpoint of other options is refused and leaves the trainer untouched.
  TrainerOptions other = o;
  other.learning_rate = 0.01;
  TinyLm third(be.get(), 16, 8, 1);
  auto t3 = Trainer::Create(&third, data, {}, other);
  auto st = (*t3)->RestoreCheckpoint(path);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_EQ((*t3)->step(), 0);
  std::filesystem::remove(path);
}

TEST(TrainerTest, CancellationStopsBetweenSteps) {
  auto be = MakeCpuBackend();
  TinyLm lm(be.get(), 16, 8, 1);
  auto t = Trainer::Create(&lm, RuleData(50, 16, 2), {}, SmallOptions());
  std::atomic<bool> cancel{false};
  RunControls c;
  c.cancel = &cancel;
  c.on_progress = [&](const TrainProgress& p) {
    if (p.step == 4) cancel = true;
  };
  auto r = (*t)->Run(c);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_NE(r.status().message().find("after step 4"), std::string_view::npos) << r.status();
  EXPECT_EQ((*t)->step(), 4);
}

TEST(TrainerTest, NonFiniteLossFailsNamingTheStepAndLeavesWeights) {
  auto be = MakeCpuBackend();
  TinyLm lm(be.get(), 16, 8, 1);
  auto t = Trainer::Create(&lm, RuleData(50, 16, 2), {}, SmallOptions());
  RunControls c;
  c.stop_after_step = 3;
  ASSERT_TRUE((*t)->Run(c).ok());
  auto before = lm.Values();
  lm.set_poison(true);
  auto r = (*t)->Run();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("step 4"), std::string_view::npos) << r.status();
  EXPECT_EQ(lm.Values(), before);
}


// Data whose next token follows `mult * t + add` (mod vocab); training on one rule and validating on a
// mixture with another makes the validation loss fall first, then rise as the model commits to the
// training rule.
std::vector<data::TokenizedExample> AffineData(int n, int vocab, int mult, int add, uint64_t seed) {
  data::Rng rng(seed);
  std::vector<data::TokenizedExample> out;
  for (int i = 0; i < n; ++i) {
    data::TokenizedExample e;
    int t = static_cast<int>(rng.Uniform(vocab));
    for (int j = 0; j < 8; ++j) {
      e.tokens.push_back(t);
      e.loss_mask.push_back(j >= 1);
      t = (mult * t + add) % vocab;
    }
    e.prompt_tokens = 1;
    out.push_back(std::move(e));
  }
  return out;
}

// Early stopping keeps the best validation's parameters (not the last step's) and ends the run once
// `patience` validations in a row bring no new best.
TEST(TrainerTest, EarlyStoppingRestoresTheBestCheckpoint) {
  auto be = MakeCpuBackend();
  auto train = AffineData(200, 16, 3, 1, 2);
  auto validation = AffineData(20, 16, 3, 1, 3);
  auto other = AffineData(60, 16, 5, 7, 4);
  validation.insert(validation.end(), other.begin(), other.end());
  TrainerOptions o = SmallOptions();
  o.max_steps = 200;
  o.eval_every = 2;
  o.learning_rate = 0.05;
  o.warmup_steps = 0;

  // Reference run without early stopping: its validation curve has its minimum strictly inside.
  TinyLm ref_lm(be.get(), 16, 8, 1);
  auto ref = Trainer::Create(&ref_lm, train, validation, o);
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto ref_run = (*ref)->Run();
  ASSERT_TRUE(ref_run.ok()) << ref_run.status();
  const auto& curve = (*ref)->val_losses();
  int64_t argmin = 0;
  double min_loss = ref_run->initial_val_loss;
  for (size_t i = 0; i < curve.size(); ++i) {
    if (!std::isnan(curve[i]) && curve[i] < min_loss) {
      min_loss = curve[i];
      argmin = static_cast<int64_t>(i) + 1;
    }
  }
  ASSERT_GT(argmin, 0) << "the validation loss must first fall";
  ASSERT_LT(argmin + 10, o.max_steps) << "the validation loss must rise after a point";
  ASSERT_GT(ref_run->final_val_loss, min_loss * 1.01);
  EXPECT_EQ(ref_run->best_step, argmin);  // tracked even without restore_best

  o.early_stopping_patience = 3;
  o.restore_best = true;
  TinyLm lm(be.get(), 16, 8, 1);
  auto t = Trainer::Create(&lm, train, validation, o);
  ASSERT_TRUE(t.ok());
  std::vector<float> at_best;
  RunControls c;
  c.on_progress = [&](const TrainProgress& p) {
    if (p.step == argmin) at_best = lm.Values();
  };
  auto r = (*t)->Run(c);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->finished);
  EXPECT_TRUE(r->stopped_early);
  EXPECT_EQ(r->best_step, argmin);
  EXPECT_EQ(r->steps, argmin + 3 * o.eval_every);  // three validations without a new best
  EXPECT_DOUBLE_EQ(r->best_val_loss, min_loss);
  EXPECT_DOUBLE_EQ(r->final_val_loss, min_loss);
  ASSERT_FALSE(at_best.empty());
  EXPECT_EQ(lm.Values(), at_best);  // the best step's parameters, not the last step's
  auto loss = (*t)->ValidationLoss();
  ASSERT_TRUE(loss.ok());
  EXPECT_NEAR(*loss, min_loss, 1e-6);
}

// A run stopped and resumed from its checkpoint ends like the uninterrupted run: the same best step,
// the same early stop and the best validation's parameters, even when the best came before the stop
// (the snapshot travels with the checkpoint), and whether the stop is before or after the best.
TEST(TrainerTest, ResumedRunKeepsTheBestCheckpointAcrossTheRestart) {
  auto be = MakeCpuBackend();
  auto train = AffineData(200, 16, 3, 1, 2);
  auto validation = AffineData(20, 16, 3, 1, 3);
  auto other = AffineData(60, 16, 5, 7, 4);
  validation.insert(validation.end(), other.begin(), other.end());
  TrainerOptions o = SmallOptions();
  o.max_steps = 200;
  o.eval_every = 2;
  o.learning_rate = 0.05;
  o.warmup_steps = 0;
  o.early_stopping_patience = 3;
  o.restore_best = true;

  TinyLm full(be.get(), 16, 8, 1);
  auto tf = Trainer::Create(&full, train, validation, o);
  ASSERT_TRUE(tf.ok());
  auto rf = (*tf)->Run();
  ASSERT_TRUE(rf.ok()) << rf.status();
  ASSERT_TRUE(rf->stopped_early);
  ASSERT_GT(rf->best_step, 2);
  ASSERT_LT(rf->best_step, rf->steps);

  const std::string path = TempPath("best_ckpt");
  for (int64_t stop : {rf->best_step - 1, rf->best_step + 1, rf->steps - 1}) {
    SCOPED_TRACE(stop);
    {
      TinyLm first(be.get(), 16, 8, 1);
      auto t1 = Trainer::Create(&first, train, validation, o);
      RunControls c;
      c.stop_after_step = stop;
      auto r = (*t1)->Run(c);
      ASSERT_TRUE(r.ok());
      ASSERT_FALSE(r->finished);
      ASSERT_TRUE((*t1)->SaveCheckpoint(path).ok());
    }
    TinyLm second(be.get(), 16, 8, 1);
    auto t2 = Trainer::Create(&second, train, validation, o);
    ASSERT_TRUE((*t2)->RestoreCheckpoint(path).ok());
    auto r2 = (*t2)->Run();
    ASSERT_TRUE(r2.ok()) << r2.status();
    EXPECT_TRUE(r2->finished);
    EXPECT_TRUE(r2->stopped_early);
    EXPECT_EQ(r2->steps, rf->steps);
    EXPECT_EQ(r2->best_step, rf->best_step);
    EXPECT_EQ(r2->best_val_loss, rf->best_val_loss);
    EXPECT_EQ(r2->final_val_loss, rf->final_val_loss);
    EXPECT_EQ(second.Values(), full.Values());  // the best step's parameters, bit for bit
  }

  // Without restore_best the tracking still survives the restart (the plateau stop comes at the same
  // step), and no snapshot is stored.
  o.restore_best = false;
  TinyLm plain(be.get(), 16, 8, 1);
  auto tp = Trainer::Create(&plain, train, validation, o);
  auto rp = (*tp)->Run();
  ASSERT_TRUE(rp.ok());
  {
    TinyLm first(be.get(), 16, 8, 1);
    auto t1 = Trainer::Create(&first, train, validation, o);
    RunControls c;
    c.stop_after_step = rp->best_step + 1;
    ASSERT_TRUE((*t1)->Run(c).ok());
    ASSERT_TRUE((*t1)->SaveCheckpoint(path).ok());
  }
  TinyLm second(be.get(), 16, 8, 1);
  auto t2 = Trainer::Create(&second, train, validation, o);
  ASSERT_TRUE((*t2)->RestoreCheckpoint(path).ok());
  auto r2 = (*t2)->Run();
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->steps, rp->steps);
  EXPECT_EQ(r2->best_step, rp->best_step);
  EXPECT_EQ(second.Values(), plain.Values());
  std::filesystem::remove(path);
}

// When no step improves on the starting point, restore_best returns the starting parameters.
TEST(TrainerTest, RestoreBestKeepsTheStartWhenTrainingOnlyHurts) {
  auto be = MakeCpuBackend();
  TinyLm lm(be.get(), 16, 8, 1);
  const std::vector<float> start = lm.Values();
  TrainerOptions o = SmallOptions();
  o.max_steps = 20;
  o.eval_every = 5;
  o.restore_best = true;
  o.learning_rate = 0.2;
  // Validation on a rule the training data contradicts everywhere.
  auto t = Trainer::Create(&lm, AffineData(100, 16, 3, 1, 2), AffineData(40, 16, 3, 9, 3), o);
  ASSERT_TRUE(t.ok());
  auto r = (*t)->Run();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->best_step, 0) << "every validation after training must be worse than the start";
  EXPECT_EQ(lm.Values(), start);
  EXPECT_DOUBLE_EQ(r->final_val_loss, r->initial_val_loss);
  EXPECT_FALSE(r->stopped_early);  // patience 0: off
  EXPECT_EQ(r->steps, 20);
}

TEST(TrainerTest, RejectsBadOptions) {
  auto be = MakeCpuBackend();
  TinyLm lm(be.get(), 16, 8, 1);
  TrainerOptions o = SmallOptions();
  o.grad_accum_steps = 100;
  auto t = Trainer::Create(&lm, RuleData(50, 16, 2), {}, o);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("grad_accum_steps"), std::string_view::npos);
  EXPECT_EQ(Trainer::Create(&lm, {}, {}, SmallOptions()).status().code(),
            absl::StatusCode::kInvalidArgument);
}


// bf16 weights train through f32 master copies: a step far below one bf16 ulp (2^-9 at 0.5) still moves
// the weights once enough of them accumulate, which in-place bf16 updates could never do; the state
// round-trips through a checkpoint exactly.
TEST(TrainerTest, Bf16ParametersAccumulateSubUlpUpdatesInF32Masters) {
  auto be = MakeCpuBackend();
  auto data = RuleData(60, 16, 4);
  TrainerOptions o = SmallOptions();
  o.max_steps = 24;
  o.learning_rate = 2e-4;  // Adam's step ~ lr: 1/10 of a bf16 ulp near 0.5
  o.warmup_steps = 0;
  o.weight_decay = 0.0;
  TinyLm lm(be.get(), 16, 8, 1, DType::kBF16);
  const std::vector<float> before = lm.Values();
  auto t = Trainer::Create(&lm, data, {}, o);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->optimizer_state_bytes(), 2 * 3 * 16 * 8 * 4);  // m, v and the f32 master per weight
  auto r = (*t)->Run();
  ASSERT_TRUE(r.ok()) << r.status();
  for (const TrainParam& p : lm.Parameters()) EXPECT_EQ(p.value.dtype(), DType::kBF16) << p.name;
  const std::vector<float> after = lm.Values();
  // Weights with |w| >= 0.25 have a bf16 half-ulp >= 2^-11 ~ 4.9e-4 > lr: an update applied to the bf16
  // value itself would round back every step. Through the masters, most of them move.
  int64_t large = 0, moved = 0;
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_LE(std::fabs(after[i] - before[i]), 24 * 2e-4 * 1.5 + std::fabs(before[i]) / 256) << i;
    if (std::fabs(before[i]) < 0.25f) continue;
    ++large;
    moved += after[i] != before[i];
  }
  ASSERT_GT(large, 20);
  EXPECT_GT(moved, large / 4) << moved << " of " << large;

  // Resume from a checkpoint taken midway equals the uninterrupted run, bit for bit (the masters are saved).
  const std::string path = TempPath("bf16_ckpt");
  TinyLm first(be.get(), 16, 8, 1, DType::kBF16);
  auto t1 = Trainer::Create(&first, data, {}, o);
  RunControls c;
  c.stop_after_step = 11;
  ASSERT_TRUE((*t1)->Run(c).ok());
  ASSERT_TRUE((*t1)->SaveCheckpoint(path).ok());
  TinyLm second(be.get(), 16, 8, 1, DType::kBF16);
  auto t2 = Trainer::Create(&second, data, {}, o);
  ASSERT_TRUE((*t2)->RestoreCheckpoint(path).ok());
  ASSERT_TRUE((*t2)->Run().ok());
  EXPECT_EQ(second.Values(), after);
  EXPECT_EQ((*t2)->losses(), (*t)->losses());
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace tessera::train
