// Joint training (joint_trainer.h): several jobs' overlays in one forward/backward. Checked against solo
// runs on the CPU backend (the reference): a job's slot gradients in a pooled step equal its solo step's,
// do not change when another job's data changes (also when both train the same (layer, expert) id with
// different weights), and whole Trainer runs with different options match their solo runs step by step;
// a job that is cancelled or fails leaves the others training to their solo result.
#include "core/train/joint_trainer.h"

#include <atomic>
#include <cmath>
#include <thread>

#include "core/data/rng.h"
#include "core/train/lm_batch.h"
#include "core/train/lora_trainable.h"
#include "core/train/model_trainable.h"
#include "core/train/trainer.h"
#include "gtest/gtest.h"
#include "tests/core/train/test_models.h"

namespace tessera::train {
namespace {

using testing::SmallMoeConfig;

// prompt [30, a, b, 31] -> completion [(mul*a+add)%30, (mul*b+add)%30, 31], optionally longer prompts.
std::vector<data::TokenizedExample> TaskData(int n, uint64_t seed, int mul, int add, int extra_prompt = 0) {
  data::Rng rng(seed);
  std::vector<data::TokenizedExample> out;
  for (int i = 0; i < n; ++i) {
    int a = static_cast<int>(rng.Uniform(30)), b = static_cast<int>(rng.Uniform(30));
    data::TokenizedExample e;
    for (int j = 0; j < extra_prompt; ++j) e.tokens.push_back(static_cast<int32_t>(rng.Uniform(30)));
    for (int32_t t : {30, a, b, 31, (mul * a + add) % 30, (mul * b + add) % 30, 31}) e.tokens.push_back(t);
    e.loss_mask.assign(e.tokens.size(), 0);
    for (size_t j = e.tokens.size() - 3; j < e.tokens.size(); ++j) e.loss_mask[j] = 1;
    e.prompt_tokens = static_cast<int64_t>(e.tokens.size()) - 3;
    out.push_back(e);
  }
  return out;
}

struct Fixture {
  std::unique_ptr<Backend> be = MakeCpuBackend();
  ModelConfig c = SmallMoeConfig();
  std::unique_ptr<Model> model;
  explicit Fixture(DType dtype = DType::kF32) {
    ModelWeights w = *ModelWeights::RandomInit(c, 11, be.get());
    if (dtype != DType::kF32) w = *w.WithMatrixDtype(c, dtype, be.get());
    model = *Model::Create(c, std::move(w), be.get());
  }

  // A fresh training overlay for `slots`; `scale` != 1 makes its weights differ from the base's.
  std::shared_ptr<const ExpertOverlay> Overlay(const std::vector<SlotId>& slots, float scale = 1.0f) {
    auto o = *ExpertOverlay::CopyOfBase(c, model->weights(), slots, be.get());
    if (scale != 1.0f) {
      for (const auto& [s, w] : o->slots()) {
        EXPECT_TRUE(be->Scale(const_cast<Tensor&>(w.up), scale).ok());
        EXPECT_TRUE(be->Scale(const_cast<Tensor&>(w.gate), 1.0f / scale).ok());
      }
    }
    return o;
  }
};

struct StepOut {
  double loss = 0;
  std::vector<float> grad;  // the flat gradient
};

// One gradient computation as the Trainer does it: mean CE over the batch's own targets, then Backward.
StepOut GradStep(TrainableLm& m, const std::vector<data::TokenizedExample>& examples, int64_t seq_len) {
  Backend& be = m.backend();
  Tensor flat = m.FlatGradients();
  EXPECT_TRUE(be.Fill(flat, 0.0f).ok());
  std::vector<const data::TokenizedExample*> ptrs;
  for (const auto& e : examples) ptrs.push_back(&e);
  LmBatch b = MakeLmBatch(ptrs, seq_len);
  auto logits = m.Forward(b.seqs, true);
  EXPECT_TRUE(logits.ok()) << logits.status();
  Tensor targets = *be.FromHost(b.targets, {b.num_tokens});
  Tensor loss = *be.Alloc({b.num_tokens}, DType::kF32), lse = *be.Alloc({b.num_tokens}, DType::kF32);
  EXPECT_TRUE(be.CrossEntropyForward(*logits, targets, loss, &lse).ok());
  Tensor dloss = *be.Alloc({b.num_tokens}, DType::kF32);
  EXPECT_TRUE(be.Fill(dloss, static_cast<float>(1.0 / b.num_targets)).ok());
  Tensor dlogits = *be.Alloc(logits->shape(), m.LogitsGradDtype());
  EXPECT_TRUE(be.CrossEntropyBackward(*logits, targets, lse, dloss, dlogits).ok());
  absl::Status s = m.Backward(dlogits);
  EXPECT_TRUE(s.ok()) << s;
  StepOut out;
  const std::vector<float> losses = *be.ToHostF32(loss);
  for (float l : losses) out.loss += l;
  out.loss /= static_cast<double>(b.num_targets);
  out.grad = *be.ToHostF32(flat);
  return out;
}

StepOut SoloStep(Fixture& f, std::shared_ptr<const ExpertOverlay> overlay, std::vector<SlotId> slots,
                 const std::vector<data::TokenizedExample>& data, int64_t seq_len) {
  auto t = *ModelTrainable::ForExperts(f.model.get(), std::move(overlay), std::move(slots));
  return GradStep(*t, data, seq_len);
}

// Runs each job's step on its own thread in one group; every job joins before any submits, so the
// forward and the backward are each one pooled pass. The jobs join in their order in `jobs`, so each
// job's rows sit at the same place in the pooled batch on every run (a pooled pass stacks its members in
// join order; a GEMM's summation order may depend on a row's place in it, and the bitwise checks below
// compare two runs).
struct JointJob {
  std::shared_ptr<const ExpertOverlay> overlay;
  std::vector<SlotId> slots;
  std::vector<data::TokenizedExample> data;
  int64_t seq_len = 16;
  StepOut out;
};

JointGroup::Stats JointSteps(Fixture& f, std::vector<JointJob>& jobs) {
  auto group = JointGroup::Create(f.model.get());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < jobs.size(); ++i) {
    threads.emplace_back([&group, &j = jobs[i], i, n = static_cast<int>(jobs.size())] {
      while (group->stats().joined < static_cast<int64_t>(i)) std::this_thread::yield();  // join in order
      auto m = group->Join();
      ASSERT_TRUE(m->SetTrainable(j.overlay, j.slots).ok());
      while (group->stats().joined < n) std::this_thread::yield();  // everyone in before the first request
      j.out = GradStep(*m, j.data, j.seq_len);
    });
  }
  for (auto& t : threads) t.join();
  return group->stats();
}

void ExpectNear(const std::vector<float>& a, const std::vector<float>& b, float tol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], tol) << "element " << i;
}

double AbsSum(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += std::fabs(x);
  return s;
}

class JointDtypeTest : public ::testing::TestWithParam<DType> {};

// f32, and bf16 weights (bf16 GEMM operands and dlogits, as on a GPU; the CPU's reference path).
TEST_P(JointDtypeTest, PooledStepGivesEachJobItsSoloGradientAndLoss) {
  Fixture f(GetParam());
  const std::vector<SlotId> slots_a = {{0, 1}, {0, 5}, {1, 2}}, slots_b = {{0, 3}, {1, 6}};
  auto data_a = TaskData(12, 1, 7, 3), data_b = TaskData(9, 2, 5, 1, /*extra_prompt=*/3);
  StepOut solo_a = SoloStep(f, f.Overlay(slots_a), slots_a, data_a, 16);
  StepOut solo_b = SoloStep(f, f.Overlay(slots_b, 1.3f), slots_b, data_b, 8);
  ASSERT_GT(AbsSum(solo_a.grad), 1e-3);
  ASSERT_GT(AbsSum(solo_b.grad), 1e-3);

  std::vector<JointJob> jobs(2);
  jobs[0] = {f.Overlay(slots_a), slots_a, data_a, 16, {}};
  jobs[1] = {f.Overlay(slots_b, 1.3f), slots_b, data_b, 8, {}};
  JointGroup::Stats st = JointSteps(f, jobs);
  EXPECT_EQ(st.forward_passes, 1);   // one pooled forward ...
  EXPECT_EQ(st.backward_passes, 1);  // ... and one pooled backward for both jobs
  EXPECT_EQ(st.max_members_in_pass, 2);
  EXPECT_NEAR(jobs[0].out.loss, solo_a.loss, 1e-5);
  EXPECT_NEAR(jobs[1].out.loss, solo_b.loss, 1e-5);
  ExpectNear(jobs[0].out.grad, solo_a.grad, 1e-5f);
  ExpectNear(jobs[1].out.grad, solo_b.grad, 1e-5f);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, JointDtypeTest, ::testing::Values(DType::kF32, DType::kBF16),
                         [](const ::testing::TestParamInfo<DType>& i) {
                           return std::string(i.param == DType::kF32 ? "f32" : "bf16");
                         });

TEST(JointTrainerTest, SameSlotIdsWithDifferentWeightsGetOnlyTheirOwnJobsGradient) {
  Fixture f;
  // Both jobs train the same slots; B's copy has other weights and B's data is another task.
  const std::vector<SlotId> slots = {{0, 0}, {0, 1}, {0, 2}, {0, 3}, {1, 0}, {1, 1}, {1, 2}, {1, 3},
                                     {0, 4}, {0, 5}, {0, 6}, {0, 7}, {1, 4}, {1, 5}, {1, 6}, {1, 7}};
  auto data_a = TaskData(10, 1, 7, 3);
  StepOut solo_a = SoloStep(f, f.Overlay(slots), slots, data_a, 16);
  StepOut solo_b1 = SoloStep(f, f.Overlay(slots, 0.7f), slots, TaskData(10, 5, 11, 4), 16);

  std::vector<StepOut> a_runs;
  for (uint64_t b_seed : {5u, 6u}) {  // B's batch changes; A's gradient must not
    std::vector<JointJob> jobs(2);
    jobs[0] = {f.Overlay(slots), slots, data_a, 16, {}};
    jobs[1] = {f.Overlay(slots, 0.7f), slots, TaskData(10, b_seed, 11, 4), 16, {}};
    JointGroup::Stats st = JointSteps(f, jobs);
    EXPECT_EQ(st.backward_passes, 1);
    a_runs.push_back(jobs[0].out);
    if (b_seed == 5) ExpectNear(jobs[1].out.grad, solo_b1.grad, 1e-5f);
  }
  ExpectNear(a_runs[0].grad, solo_a.grad, 1e-5f);
  EXPECT_EQ(a_runs[0].grad, a_runs[1].grad);  // bitwise: B's rows never enter A's sums
  EXPECT_EQ(a_runs[0].loss, a_runs[1].loss);

  // The same check at the model level: with one gradient set without an owner (the old contract: every
  // assignment routed to the slot), A's buffer would have summed B's rows too; with owners it does not.
  auto oa = f.Overlay(slots), ob = f.Overlay(slots, 0.7f);
  std::vector<int32_t> sa = {30, 3, 4, 31, 24, 1, 31}, sb = {30, 9, 2, 31, 14, 8, 31};
  SequenceInput in[2] = {{absl::MakeConstSpan(sa), oa.get(), nullptr}, {absl::MakeConstSpan(sb), ob.get(), nullptr}};
  ForwardOptions fo;
  fo.logits = LogitsMode::kAll;
  fo.save_activations = true;
  auto fwd = *f.model->Forward(in, fo);
  std::vector<int32_t> targets(14, -1);
  for (int i = 0; i < 6; ++i) targets[i] = sa[i + 1];  // loss on A's rows only
  auto ga = *Gradients::Create(f.c, TrainableSet::Slots(slots), f.be.get());
  auto gb = *Gradients::Create(f.c, TrainableSet::Slots(slots), f.be.get());
  ga.owner = oa.get();
  gb.owner = ob.get();
  ASSERT_TRUE(f.model->Backward(fwd, {targets}, &ga).ok());
  auto shared = *Gradients::Create(f.c, TrainableSet::Slots(slots), f.be.get());
  ASSERT_TRUE(f.model->Backward(fwd, {targets}, &shared).ok());
  std::vector<float> own = *f.be->ToHostF32(ga.flat), merged = *f.be->ToHostF32(shared.flat);
  ExpectNear(own, merged, 1e-6f);  // B's rows carry no loss here, so the two agree ...
  // ... and B's buffer gets exactly nothing from A's loss when both are filled in one pass.
  ASSERT_TRUE(ga.Zero(f.be.get()).ok());
  Gradients* both[] = {&ga, &gb};
  auto fwd2 = *f.model->Forward(in, fo);
  Tensor tg = *f.be->FromHost(targets, {14});
  Tensor loss = *f.be->Alloc({14}, DType::kF32), lse = *f.be->Alloc({14}, DType::kF32);
  ASSERT_TRUE(f.be->CrossEntropyForward(fwd2.logits, tg, loss, &lse).ok());
  Tensor dloss = *f.be->Alloc({14}, DType::kF32);
  ASSERT_TRUE(f.be->Fill(dloss, 1.0f / 6).ok());
  Tensor dlogits = *f.be->Alloc({14, f.c.vocab_size}, DType::kF32);
  ASSERT_TRUE(f.be->CrossEntropyBackward(fwd2.logits, tg, lse, dloss, dlogits).ok());
  ASSERT_TRUE(f.model->BackwardFromLogits(fwd2, dlogits, absl::MakeConstSpan(both)).ok());
  EXPECT_GT(AbsSum(*f.be->ToHostF32(ga.flat)), 1e-4);
  EXPECT_EQ(AbsSum(*f.be->ToHostF32(gb.flat)), 0.0);
  ExpectNear(*f.be->ToHostF32(ga.flat), own, 1e-6f);
  // Several sets need distinct owners.
  gb.owner = oa.get();
  EXPECT_EQ(f.model->BackwardFromLogits(fwd2, dlogits, absl::MakeConstSpan(both)).code(),
            absl::StatusCode::kInvalidArgument);
}

// A whole job: its own Trainer over a member (joint) or a ModelTrainable / LoraTrainable (solo).
struct JobSpec {
  std::vector<SlotId> slots;
  float scale = 1.0f;  // expert jobs: the overlay's weights (Fixture::Overlay)
  int64_t lora_rank = 0;  // > 0: LoRA factors of this rank on `slots` (over the base experts)
  std::vector<data::TokenizedExample> data;
  TrainerOptions options;
  int cancel_after = 0;  // > 0: cancelled after this step
};

struct JobRun {
  absl::Status status;
  std::vector<double> losses, val_losses, grad_norms;
  std::vector<float> params;  // every trained value at the end
  TrainResult result;
};

void RunJob(Fixture& f, const JobSpec& spec, TrainableLm* m, JobRun* out) {
  auto trainer = Trainer::Create(m, spec.data, {}, spec.options);
  if (!trainer.ok()) {
    out->status = trainer.status();
    return;
  }
  std::atomic<bool> cancel{false};
  RunControls rc;
  rc.cancel = &cancel;
  rc.on_progress = [&](const TrainProgress& p) {
    out->grad_norms.push_back(p.grad_norm);
    if (spec.cancel_after > 0 && p.step >= spec.cancel_after) cancel = true;
  };
  auto r = (*trainer)->Run(rc);
  out->status = r.status();
  if (r.ok()) out->result = *r;
  out->losses = (*trainer)->losses();
  out->val_losses = (*trainer)->val_losses();
  for (const TrainParam& p : m->Parameters()) {
    auto v = *f.be->ToHostF32(p.value);
    out->params.insert(out->params.end(), v.begin(), v.end());
  }
}

std::unique_ptr<LoraTrainable> MakeLora(Fixture& f, const JobSpec& spec) {
  LoraOptions lo;
  lo.rank = spec.lora_rank;
  lo.seed = spec.options.seed;
  auto t = LoraTrainable::Create(f.model.get(), LoraAdapter(), spec.slots, lo);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

JobRun Solo(Fixture& f, const JobSpec& spec) {
  std::unique_ptr<TrainableLm> t;
  if (spec.lora_rank > 0) t = MakeLora(f, spec);
  else t = *ModelTrainable::ForExperts(f.model.get(), f.Overlay(spec.slots, spec.scale), spec.slots);
  JobRun out;
  RunJob(f, spec, t.get(), &out);
  return out;
}

std::vector<JobRun> Joint(Fixture& f, const std::vector<JobSpec>& specs, JointGroup::Stats* stats) {
  auto group = JointGroup::Create(f.model.get());
  std::vector<JobRun> runs(specs.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < specs.size(); ++i) {
    threads.emplace_back([&, i] {
      auto m = group->Join();
      absl::Status s = specs[i].lora_rank > 0
                           ? m->SetLora(MakeLora(f, specs[i]))
                           : m->SetTrainable(f.Overlay(specs[i].slots, specs[i].scale), specs[i].slots);
      ASSERT_TRUE(s.ok()) << s;
      while (group->stats().joined < static_cast<int64_t>(specs.size())) std::this_thread::yield();
      RunJob(f, specs[i], m.get(), &runs[i]);
    });
  }
  for (auto& t : threads) t.join();
  *stats = group->stats();
  return runs;
}

void ExpectSameRun(const JobRun& joint, const JobRun& solo) {
  ASSERT_EQ(joint.losses.size(), solo.losses.size());
  for (size_t i = 0; i < solo.losses.size(); ++i) EXPECT_NEAR(joint.losses[i], solo.losses[i], 1e-4) << "step " << i + 1;
  ASSERT_EQ(joint.grad_norms.size(), solo.grad_norms.size());
  for (size_t i = 0; i < solo.grad_norms.size(); ++i) {
    EXPECT_NEAR(joint.grad_norms[i], solo.grad_norms[i], 1e-4 * (1 + solo.grad_norms[i])) << "step " << i + 1;
  }
  for (size_t i = 0; i < solo.val_losses.size(); ++i) {
    if (std::isnan(solo.val_losses[i])) {
      EXPECT_TRUE(std::isnan(joint.val_losses[i]));
    } else {
      EXPECT_NEAR(joint.val_losses[i], solo.val_losses[i], 1e-4);
    }
  }
  ExpectNear(joint.params, solo.params, 1e-3f);
  EXPECT_EQ(joint.result.steps, solo.result.steps);
  EXPECT_EQ(joint.result.best_step, solo.result.best_step);
  EXPECT_EQ(joint.result.stopped_early, solo.result.stopped_early);
}

void ExpectEverySameRun(const std::vector<JobRun>& joint, const std::vector<JobRun>& solo) {
  ASSERT_EQ(joint.size(), solo.size());
  for (size_t i = 0; i < solo.size(); ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(joint[i].status.ok()) << joint[i].status;
    ExpectSameRun(joint[i], solo[i]);
  }
}

std::vector<JobSpec> ThreeJobs() {
  std::vector<JobSpec> specs(3);
  specs[0].slots = {{0, 1}, {1, 2}, {1, 5}};
  specs[0].data = TaskData(120, 1, 7, 3);
  specs[0].options.max_steps = 12;
  specs[0].options.batch_size = 8;
  specs[0].options.learning_rate = 1e-2;
  specs[0].options.seed = 1;
  specs[0].options.eval_every = 4;
  specs[1].slots = {{0, 1}, {1, 2}, {0, 6}};  // shares two slot ids with job 0, other weights
  specs[1].scale = 1.2f;
  specs[1].data = TaskData(90, 2, 5, 1, /*extra_prompt=*/4);
  specs[1].options.max_steps = 8;  // finishes first and leaves the loop
  specs[1].options.batch_size = 6;
  specs[1].options.grad_accum_steps = 2;
  specs[1].options.seq_len = 9;
  specs[1].options.learning_rate = 3e-3;
  specs[1].options.warmup_steps = 2;
  specs[1].options.seed = 7;
  specs[2].slots = {{1, 0}, {1, 3}};
  specs[2].data = TaskData(80, 3, 11, 2);
  specs[2].options.max_steps = 10;
  specs[2].options.batch_size = 5;
  specs[2].options.learning_rate = 5e-3;
  specs[2].options.seed = 3;
  specs[2].options.eval_every = 2;
  specs[2].options.early_stopping_patience = 50;
  specs[2].options.restore_best = true;
  return specs;
}

TEST(JointTrainerTest, JobsWithDifferentOptionsTrainExactlyAsTheirSoloRuns) {
  Fixture f;
  std::vector<JobSpec> specs = ThreeJobs();
  std::vector<JobRun> solo;
  for (const JobSpec& s : specs) {
    solo.push_back(Solo(f, s));
    ASSERT_TRUE(solo.back().status.ok()) << solo.back().status;
  }
  JointGroup::Stats st;
  std::vector<JobRun> joint = Joint(f, specs, &st);
  EXPECT_EQ(st.max_members_in_pass, 3);
  // Pooling: far fewer passes than the jobs make alone (a group of one runs one pass per call).
  int64_t alone = 0;
  for (const JobSpec& s : specs) {
    JointGroup::Stats one;
    Joint(f, {s}, &one);
    EXPECT_EQ(one.max_members_in_pass, 1);
    alone += one.forward_passes + one.backward_passes;
  }
  EXPECT_LT(st.forward_passes + st.backward_passes, alone * 2 / 3);
  ExpectEverySameRun(joint, solo);
}

// LoRA jobs in the loop (mLoRA's case) beside expert-slot jobs: two LoRA jobs on the same slot ids as an
// expert job (so three jobs' copies of (0,1) and (1,2) serve rows of one pass), each trains exactly as alone:
// its factors' gradients come from dL/dW' of its own rows only.
TEST(JointTrainerTest, LoraJobsTrainBesideExpertJobsExactlyAsTheirSoloRuns) {
  Fixture f;
  std::vector<JobSpec> specs = ThreeJobs();
  specs[1].lora_rank = 4;  // slots {(0,1), (1,2), (0,6)}, with gradient accumulation and warmup
  JobSpec lora2 = specs[0];
  lora2.lora_rank = 2;
  lora2.data = TaskData(100, 9, 3, 4);
  lora2.options.seed = 5;
  lora2.options.learning_rate = 2e-2;
  specs.push_back(lora2);
  std::vector<JobRun> solo;
  for (const JobSpec& s : specs) {
    solo.push_back(Solo(f, s));
    ASSERT_TRUE(solo.back().status.ok()) << solo.back().status;
  }
  // LoRA trains: its loss falls.
  for (size_t i : {size_t{1}, size_t{3}}) EXPECT_LT(solo[i].losses.back(), solo[i].losses.front()) << i;
  JointGroup::Stats st;
  std::vector<JobRun> joint = Joint(f, specs, &st);
  EXPECT_EQ(st.max_members_in_pass, 4);
  ExpectEverySameRun(joint, solo);
}

TEST(JointTrainerTest, MemberTakesOneTrainablePart) {
  Fixture f;
  auto group = JointGroup::Create(f.model.get());
  auto m = group->Join();
  JobSpec spec;
  spec.slots = {{0, 1}};
  spec.lora_rank = 2;
  ASSERT_TRUE(m->SetLora(MakeLora(f, spec)).ok());
  EXPECT_EQ(m->SetTrainable(f.Overlay(spec.slots), spec.slots).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(m->SetLora(MakeLora(f, spec)).code(), absl::StatusCode::kFailedPrecondition);
  m.reset();  // leaves, giving up the turn the next Join waits for
  EXPECT_EQ(group->Join()->SetLora(nullptr).code(), absl::StatusCode::kInvalidArgument);
}

TEST(JointTrainerTest, CancelledOrFailingJobLeavesTheOthersTrainingToTheirSoloResult) {
  Fixture f;
  std::vector<JobSpec> specs = ThreeJobs();
  std::vector<JobRun> solo = {Solo(f, specs[0]), Solo(f, specs[2])};
  specs[1].cancel_after = 3;             // job 1 is cancelled after step 3,
  JobSpec diverging = specs[2];          // job 3 diverges (non-finite loss) a few steps in,
  diverging.options.learning_rate = 1e30;
  diverging.options.max_grad_norm = 0;
  specs.push_back(diverging);
  JobSpec bad = specs[0];                // and job 4's data has tokens outside the vocabulary.
  for (auto& e : bad.data) e.tokens[1] = 1000;
  specs.push_back(bad);
  JointGroup::Stats st;
  std::vector<JobRun> joint = Joint(f, specs, &st);
  EXPECT_EQ(st.max_members_in_pass, 4);
  EXPECT_EQ(joint[1].status.code(), absl::StatusCode::kCancelled) << joint[1].status;
  EXPECT_EQ(joint[1].losses.size(), 3u);
  EXPECT_EQ(joint[3].status.code(), absl::StatusCode::kFailedPrecondition) << joint[3].status;
  EXPECT_NE(joint[3].status.message().find("diverged"), std::string::npos) << joint[3].status;
  EXPECT_GE(joint[3].losses.size(), 1u);
  EXPECT_EQ(joint[4].status.code(), absl::StatusCode::kInvalidArgument) << joint[4].status;
  EXPECT_NE(joint[4].status.message().find("outside the vocabulary"), std::string::npos);
  ASSERT_TRUE(joint[0].status.ok()) << joint[0].status;
  ASSERT_TRUE(joint[2].status.ok()) << joint[2].status;
  ExpectSameRun(joint[0], solo[0]);
  ExpectSameRun(joint[2], solo[1]);
}

TEST(JointTrainerTest, MemberThatJoinsLaterTrainsToItsSoloResult) {
  Fixture f;
  std::vector<JobSpec> specs = ThreeJobs();
  JobRun solo0 = Solo(f, specs[0]), solo2 = Solo(f, specs[2]);
  auto group = JointGroup::Create(f.model.get());
  JobRun r0, r2;
  std::atomic<bool> started{false};
  std::thread first([&] {
    auto m = group->Join();
    ASSERT_TRUE(m->SetTrainable(f.Overlay(specs[0].slots), specs[0].slots).ok());
    started = true;
    RunJob(f, specs[0], m.get(), &r0);
  });
  while (!started) std::this_thread::yield();
  std::thread second([&] {  // joins while the first one trains
    auto m = group->Join();
    ASSERT_TRUE(m->SetTrainable(f.Overlay(specs[2].slots), specs[2].slots).ok());
    RunJob(f, specs[2], m.get(), &r2);
  });
  first.join();
  second.join();
  ASSERT_TRUE(r0.status.ok()) << r0.status;
  ASSERT_TRUE(r2.status.ok()) << r2.status;
  ExpectSameRun(r0, solo0);
  ExpectSameRun(r2, solo2);
  EXPECT_EQ(group->members(), 0);
}

}  // namespace
}  // namespace tessera::train
