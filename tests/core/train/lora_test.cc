// LoRA on expert slots (core/train/lora_trainable.h, core/model/lora_overlay.h) on a small random MoE:
// the gradients of A and B against central finite differences of the loss, step 0 == the starting
// version bitwise, frozen weights untouched and unlisted, and the stored version -- loaded as the
// runtime loads it (merged when loaded) -- computing what explicitly merged weights compute.
#include "core/train/lora_trainable.h"

#include <cmath>
#include <random>

#include "absl/strings/match.h"
#include "core/io/safetensors.h"
#include "core/model/lora_overlay.h"
#include "core/train/lora_finetune.h"
#include "core/train/trainer.h"
#include "gtest/gtest.h"
#include "tests/core/train/test_models.h"

namespace tessera::train {
namespace {

using testing::SmallMoeConfig;

struct Fixture {
  std::unique_ptr<Backend> be = MakeCpuBackend();
  ModelConfig c = SmallMoeConfig();
  std::unique_ptr<Model> model;
  std::vector<std::vector<int32_t>> seqs = {{30, 4, 9, 31, 1, 2, 3}, {30, 17, 22, 31, 8}};
  std::vector<int32_t> targets;  // next token per row, -1 at each sequence's end

  Fixture() {
    model = *Model::Create(c, *ModelWeights::RandomInit(c, 11, be.get()), be.get());
    for (const auto& s : seqs) {
      for (size_t i = 0; i < s.size(); ++i) targets.push_back(i + 1 < s.size() ? s[i + 1] : -1);
    }
  }
  std::vector<SlotId> AllSlots() const {
    std::vector<SlotId> out;
    for (int l = 0; l < c.num_layers; ++l) {
      for (int e = 0; e < c.num_experts; ++e) out.push_back({l, e});
    }
    return out;
  }
  // Mean CE over the targets (double), and dL/dlogits when `dlogits` is given.
  double Loss(const std::vector<float>& logits, std::vector<float>* dlogits = nullptr) const {
    const int64_t V = c.vocab_size, n = static_cast<int64_t>(targets.size());
    int64_t count = 0;
    for (int32_t t : targets) count += t >= 0;
    double loss = 0;
    if (dlogits) dlogits->assign(n * V, 0.0f);
    for (int64_t i = 0; i < n; ++i) {
      if (targets[i] < 0) continue;
      double mx = -1e30, z = 0;
      for (int64_t v = 0; v < V; ++v) mx = std::max<double>(mx, logits[i * V + v]);
      for (int64_t v = 0; v < V; ++v) z += std::exp(logits[i * V + v] - mx);
      loss += (std::log(z) + mx - logits[i * V + targets[i]]) / count;
      if (dlogits) {
        for (int64_t v = 0; v < V; ++v) {
          (*dlogits)[i * V + v] = static_cast<float>((std::exp(logits[i * V + v] - mx) / z - (v == targets[i])) / count);
        }
      }
    }
    return loss;
  }
  std::vector<float> Logits(const ExpertOverlay* overlay) const {
    std::vector<SequenceInput> batch;
    for (const auto& s : seqs) batch.push_back({absl::MakeConstSpan(s), overlay, nullptr});
    ForwardOptions o;
    o.logits = LogitsMode::kAll;
    auto r = model->Forward(batch, o);
    EXPECT_TRUE(r.ok()) << r.status();
    return *be->ToHostF32(r->logits);
  }
};

std::vector<float> RandomValues(size_t n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

TEST(LoraTest, GradientsOfAAndBMatchFiniteDifferences) {
  Fixture f;
  LoraOptions lo;
  lo.rank = 3;
  lo.alpha = 6;
  lo.seed = 5;
  auto t = LoraTrainable::Create(f.model.get(), {}, f.AllSlots(), lo);
  ASSERT_TRUE(t.ok()) << t.status();
  std::vector<TrainParam> params = (*t)->Parameters();
  ASSERT_EQ(params.size(), f.AllSlots().size() * 6);
  // B starts at zero (dA would be exactly 0): give every B values so both gradients are exercised.
  for (size_t i = 0; i < params.size(); ++i) {
    if (absl::EndsWith(params[i].name, ".lora_B.weight")) {
      std::vector<float> v = RandomValues(params[i].value.numel(), 0.5f, 100 + i);
      ASSERT_TRUE(f.be->CopyFromHost(v.data(), v.size() * 4, params[i].value).ok());
    }
  }
  Tensor flat = (*t)->FlatGradients();
  ASSERT_TRUE(f.be->Fill(flat, 0.0f).ok());
  auto logits = (*t)->Forward(f.seqs, true);
  ASSERT_TRUE(logits.ok()) << logits.status();
  std::vector<float> dl;
  f.Loss(*f.be->ToHostF32(*logits), &dl);
  Tensor dlog = *f.be->FromHost(dl, {static_cast<int64_t>(f.targets.size()), f.c.vocab_size});
  ASSERT_TRUE((*t)->Backward(dlog).ok());

  auto loss_now = [&]() {
    auto l = (*t)->Forward(f.seqs, false);
    EXPECT_TRUE(l.ok()) << l.status();
    return f.Loss(*f.be->ToHostF32(*l));
  };
  const float eps = 1e-3f;
  int checked = 0, nonzero = 0;
  double max_err = 0;
  for (size_t pi = 0; pi < params.size(); pi += 5) {  // a spread of A's and B's over slots and parts
    TrainParam& p = params[pi];
    std::vector<float> grad = *f.be->ToHostF32(p.grad);
    std::vector<float> value = *f.be->ToHostF32(p.value);
    for (size_t k = 0; k < value.size(); k += std::max<size_t>(1, value.size() / 4)) {
      std::vector<float> v = value;
      v[k] = value[k] + eps;
      ASSERT_TRUE(f.be->CopyFromHost(v.data(), v.size() * 4, p.value).ok());
      const double up = loss_now();
      v[k] = value[k] - eps;
      ASSERT_TRUE(f.be->CopyFromHost(v.data(), v.size() * 4, p.value).ok());
      const double down = loss_now();
      ASSERT_TRUE(f.be->CopyFromHost(value.data(), value.size() * 4, p.value).ok());
      const double fd = (up - down) / (2.0 * eps);
      const double err = std::abs(fd - grad[k]);
      max_err = std::max(max_err, err);
      EXPECT_LE(err, 2e-4 + 0.03 * std::abs(fd)) << p.name << "[" << k << "]: analytic " << grad[k] << ", fd " << fd;
      ++checked;
      nonzero += std::abs(fd) > 1e-4;
    }
  }
  EXPECT_GE(checked, 40);
  EXPECT_GE(nonzero, checked / 3) << "too few elements have a measurable gradient for the check to mean much";
}

TEST(LoraTest, StepZeroIsTheStartBitwiseAndOnlyBGetsGradientThen) {
  Fixture f;
  LoraOptions lo;
  lo.rank = 4;
  auto t = LoraTrainable::Create(f.model.get(), {}, {{0, 1}, {0, 5}, {1, 2}, {1, 6}}, lo);
  ASSERT_TRUE(t.ok()) << t.status();
  auto logits = (*t)->Forward(f.seqs, true);
  ASSERT_TRUE(logits.ok());
  const std::vector<float> base = f.Logits(nullptr);
  EXPECT_EQ(*f.be->ToHostF32(*logits), base);  // B = 0: W' = W0 exactly
  std::vector<float> dl;
  f.Loss(base, &dl);
  ASSERT_TRUE((*t)->Backward(*f.be->FromHost(dl, {static_cast<int64_t>(f.targets.size()), f.c.vocab_size})).ok());
  double a_norm = 0, b_norm = 0;
  for (const TrainParam& p : (*t)->Parameters()) {
    const std::vector<float> grad = *f.be->ToHostF32(p.grad);
    for (float g : grad) {
      (absl::EndsWith(p.name, ".lora_A.weight") ? a_norm : b_norm) += double{g} * g;
    }
  }
  EXPECT_EQ(a_norm, 0.0);  // dA = s B^T dW' = 0 while B = 0
  EXPECT_GT(b_norm, 0.0);
}

std::vector<data::TokenizedExample> CopyTask(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<data::TokenizedExample> out;
  for (int i = 0; i < n; ++i) {
    int a = rng() % 30, b = rng() % 30;
    data::TokenizedExample e;
    e.tokens = {30, a, b, 31, (7 * a + 3) % 30, (7 * b + 3) % 30, 31};
    e.loss_mask = {0, 0, 0, 0, 1, 1, 1};
    e.prompt_tokens = 4;
    out.push_back(e);
  }
  return out;
}

std::vector<float> AllWeights(Backend* be, Model& m) {
  std::vector<float> out;
  for (const NamedParam& p : m.mutable_weights().Parameters(m.config())) {
    auto v = *be->ToHostF32(*p.tensor);
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

TEST(LoraTest, TrainingTouchesOnlyTheFactorsAndLowersTheLoss) {
  Fixture f;
  const std::vector<float> before = AllWeights(f.be.get(), *f.model);
  FineTuneOptions o;
  o.auto_select = false;
  o.explicit_slots = f.AllSlots();
  o.trainer.max_steps = 30;
  o.trainer.batch_size = 16;
  o.trainer.learning_rate = 1e-2;
  o.trainer.seed = 2;
  LoraOptions lo;
  lo.rank = 2;
  auto r = FineTuneLora(*f.model, "sha", CopyTask(96, 1), CopyTask(32, 2), o, lo);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LT(r->result.train.final_val_loss, r->result.train.initial_val_loss - 0.1);
  EXPECT_EQ(AllWeights(f.be.get(), *f.model), before);  // the backbone is frozen
  // Trainable parameters: exactly the factors, 2 r (in + out)... per part: r (D + F) * 2 floats... per slot.
  const int64_t per_slot = 3 * lo.rank * (f.c.hidden_size + f.c.expert_dim);
  EXPECT_EQ(r->result.trainable_parameters, per_slot * static_cast<int64_t>(o.explicit_slots.size()));
  EXPECT_EQ(r->adapter.FactorElements(), r->result.trainable_parameters);
  // The blob holds only factors (no dense expert tensor) and says what it is.
  auto file = io::SafetensorsFile::FromBytes(r->result.artifact);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->metadata().at("format"), "tessera-lora-v1");
  EXPECT_EQ((*file)->metadata().at("lora_rank"), "2");
  for (const std::string& name : (*file)->names()) {
    EXPECT_TRUE(absl::EndsWith(name, ".lora_A.weight") || absl::EndsWith(name, ".lora_B.weight")) << name;
  }
}

// Host reference: W0 + s B A accumulated in double.
std::vector<float> ExplicitMerge(const std::vector<float>& w0, const LoraFactors& f, int64_t out, int64_t in,
                                 int64_t r, double s) {
  std::vector<float> w(w0.size());
  for (int64_t i = 0; i < out; ++i) {
    for (int64_t j = 0; j < in; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < r; ++k) acc += double{f.b[i * r + k]} * f.a[k * in + j];
      w[i * in + j] = static_cast<float>(w0[i * in + j] + s * acc);
    }
  }
  return w;
}

TEST(LoraTest, LoadedVersionServesWhatTheExplicitlyMergedWeightsServe) {
  Fixture f;
  FineTuneOptions o;
  o.auto_select = false;
  o.explicit_slots = {{0, 0}, {0, 3}, {1, 1}, {1, 4}, {1, 7}};
  o.trainer.max_steps = 12;
  o.trainer.batch_size = 8;
  o.trainer.learning_rate = 3e-2;
  LoraOptions lo;
  lo.rank = 2;
  auto r = FineTuneLora(*f.model, "sha", CopyTask(64, 3), CopyTask(16, 4), o, lo);
  ASSERT_TRUE(r.ok()) << r.status();
  // As the runtime loads it: the blob merged once, on the serving backend.
  auto loaded = LoadVersionOverlay(f.c, r->result.artifact, &f.model->weights(), f.be.get());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->SlotIds(), o.explicit_slots);
  // Explicitly merged weights, computed independently on the host.
  auto adapter = LoraAdapter::Parse(f.c, r->result.artifact);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_EQ(adapter->rank, 2);
  EXPECT_EQ(adapter->alpha, lo.alpha);
  std::map<SlotId, ExpertWeights> explicit_slots;
  double max_weight_diff = 0;
  for (SlotId s : o.explicit_slots) {
    const ExpertWeights& base = f.model->weights().layers[s.layer].experts[s.expert];
    ExpertWeights w;
    for (int p = 0; p < 3; ++p) {
      const Tensor& b0 = p == 0 ? base.gate : p == 1 ? base.up : base.down;
      std::vector<int64_t> shape = ExpertPartShape(f.c, p);
      std::vector<float> m = ExplicitMerge(*f.be->ToHostF32(b0), adapter->factors.at(s)[p], shape[0], shape[1], 2,
                                           lo.alpha / lo.rank);
      std::vector<float> served = *f.be->ToHostF32(p == 0 ? (*loaded)->Find(s)->gate
                                                          : p == 1 ? (*loaded)->Find(s)->up : (*loaded)->Find(s)->down);
      for (size_t i = 0; i < m.size(); ++i) max_weight_diff = std::max<double>(max_weight_diff, std::abs(m[i] - served[i]));
      (p == 0 ? w.gate : p == 1 ? w.up : w.down) = *f.be->FromHost(m, shape);
    }
    explicit_slots[s] = w;
  }
  EXPECT_LE(max_weight_diff, 1e-6);  // f32 summation order of the r = 2 products only
  auto explicit_overlay = ExpertOverlay::FromWeights(f.c, explicit_slots, f.be.get());
  ASSERT_TRUE(explicit_overlay.ok());
  const std::vector<float> served = f.Logits(loaded->get());
  const std::vector<float> reference = f.Logits(explicit_overlay->get());
  const std::vector<float> base = f.Logits(nullptr);
  double max_diff = 0, from_base = 0;
  for (size_t i = 0; i < served.size(); ++i) {
    max_diff = std::max<double>(max_diff, std::abs(served[i] - reference[i]));
    from_base = std::max<double>(from_base, std::abs(served[i] - base[i]));
  }
  EXPECT_LE(max_diff, 1e-5);
  EXPECT_GT(from_base, 1e-2);  // the version changes the output
  // And what training's last merge computed is bitwise what the loaded version serves.
  EXPECT_EQ(f.Logits(r->result.overlay.get()), served);
  // Exported merged (MergedOverlayBlob): a dense expert blob of the same values.
  auto merged_blob = MergedOverlayBlob(f.c, r->result.artifact, f.model->weights(), f.be.get());
  ASSERT_TRUE(merged_blob.ok()) << merged_blob.status();
  EXPECT_FALSE(IsLoraBlob(*merged_blob));
  auto dense = ExpertOverlay::FromSafetensors(f.c, *merged_blob, f.be.get());
  ASSERT_TRUE(dense.ok()) << dense.status();
  EXPECT_EQ(f.Logits(dense->get()), served);
  // Size: at r = 2 the factors of a slot are 3 r (D + F) = 144 floats against 3 F D = 384 dense.
  EXPECT_EQ(adapter->FactorElements(), 5 * 144);
  EXPECT_EQ((*loaded)->bytes(), 5 * 384 * 4);
}

TEST(LoraTest, ContinuingFromAVersionStartsExactlyWhereItEnded) {
  Fixture f;
  FineTuneOptions o;
  o.auto_select = false;
  o.explicit_slots = {{0, 2}, {1, 5}};
  o.trainer.max_steps = 8;
  o.trainer.batch_size = 8;
  o.trainer.learning_rate = 3e-2;
  LoraOptions lo;
  lo.rank = 2;
  auto first = FineTuneLora(*f.model, "sha", CopyTask(64, 5), CopyTask(16, 6), o, lo);
  ASSERT_TRUE(first.ok()) << first.status();
  auto start = LoraAdapter::Parse(f.c, first->result.artifact);
  ASSERT_TRUE(start.ok());
  auto served = LoadVersionOverlay(f.c, first->result.artifact, &f.model->weights(), f.be.get());
  ASSERT_TRUE(served.ok());
  // Continue on one of its slots and a new one: step 0 computes the previous version's function.
  auto t = LoraTrainable::Create(f.model.get(), *start, {{1, 5}, {0, 6}}, lo);
  ASSERT_TRUE(t.ok()) << t.status();
  auto logits = (*t)->Forward(f.seqs, false);
  ASSERT_TRUE(logits.ok());
  EXPECT_EQ(*f.be->ToHostF32(*logits), f.Logits(served->get()));
  auto adapter = (*t)->Adapter();
  ASSERT_TRUE(adapter.ok());
  EXPECT_EQ(adapter->SlotIds(), (std::vector<SlotId>{{0, 2}, {0, 6}, {1, 5}}));  // {0,2} carried
  // A different rank cannot continue these factors.
  LoraOptions other = lo;
  other.rank = 4;
  auto bad = LoraTrainable::Create(f.model.get(), *start, {{1, 5}}, other);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "lora_rank")) << bad.status();
}

TEST(LoraTest, OnTopOfAnExpertOnlyVersionItsSlotsAreTheFrozenStart) {
  Fixture f;
  // An expert-only version on {0,1} and {1,3} (dense weights far from the base).
  std::map<SlotId, ExpertWeights> dense;
  for (SlotId s : {SlotId{0, 1}, SlotId{1, 3}}) {
    ExpertWeights w;
    for (int p = 0; p < 3; ++p) {
      std::vector<int64_t> shape = ExpertPartShape(f.c, p);
      (p == 0 ? w.gate : p == 1 ? w.up : w.down) =
          *f.be->FromHost(RandomValues(shape[0] * shape[1], 0.3f, 7 + p + 3 * s.layer), shape);
    }
    dense[s] = w;
  }
  auto esft = *ExpertOverlay::FromWeights(f.c, dense, f.be.get());
  auto start = LoraAdapter::FromDenseOverlay(*esft, f.be.get(), 2, 4);
  ASSERT_TRUE(start.ok());
  LoraOptions lo;
  lo.rank = 2;
  auto t = LoraTrainable::Create(f.model.get(), *start, {{1, 3}, {1, 0}}, lo);
  ASSERT_TRUE(t.ok()) << t.status();
  auto logits = (*t)->Forward(f.seqs, false);
  ASSERT_TRUE(logits.ok());
  EXPECT_EQ(*f.be->ToHostF32(*logits), f.Logits(esft.get()));  // step 0 = the expert-only version
  // Give the factors values; the stored version (dense carried + factors) loads to the same function.
  for (TrainParam& p : (*t)->Parameters()) {
    std::vector<float> v = RandomValues(p.value.numel(), 0.2f, 77);
    ASSERT_TRUE(f.be->CopyFromHost(v.data(), v.size() * 4, p.value).ok());
  }
  auto merged = (*t)->MergedOverlay();
  ASSERT_TRUE(merged.ok());
  auto adapter = (*t)->Adapter();
  ASSERT_TRUE(adapter.ok());
  auto blob = adapter->Serialize(f.c, {{"note", "test"}});
  ASSERT_TRUE(blob.ok()) << blob.status();
  auto loaded = LoadVersionOverlay(f.c, *blob, &f.model->weights(), f.be.get());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->SlotIds(), (std::vector<SlotId>{{0, 1}, {1, 0}, {1, 3}}));
  EXPECT_EQ(f.Logits(loaded->get()), f.Logits(merged->get()));
  EXPECT_NE(f.Logits(loaded->get()), f.Logits(esft.get()));
}

TEST(LoraTest, MalformedVersionsAreRefusedNamingTheTensor) {
  Fixture f;
  LoraAdapter a;
  a.rank = 2;
  a.alpha = 4;
  auto& parts = a.factors[{0, 1}];
  for (int p = 0; p < 3; ++p) {
    std::vector<int64_t> shape = ExpertPartShape(f.c, p);
    parts[p].a.assign(2 * shape[1], 0.1f);
    parts[p].b.assign(shape[0] * 2, 0.1f);
  }
  auto blob = a.Serialize(f.c);
  ASSERT_TRUE(blob.ok());
  ASSERT_TRUE(LoraAdapter::Parse(f.c, *blob).ok());
  // Drop one B: the parser names it.
  auto file = *io::SafetensorsFile::FromBytes(*blob);
  std::vector<io::HostTensor> kept;
  std::vector<std::vector<float>> data;
  data.reserve(file->names().size());  // kept[] points into it
  const std::string dropped = LoraTensorName(f.c.family, 0, 1, hf::ExpertPart::kUp, true);
  for (const std::string& name : file->names()) {
    if (name == dropped) continue;
    data.push_back(*file->ReadF32(name));
    kept.push_back({name, DType::kF32, file->Find(name)->shape, data.back().data()});
  }
  auto broken = io::SerializeSafetensors(kept, file->metadata());
  ASSERT_TRUE(broken.ok());
  auto parsed = LoraAdapter::Parse(f.c, *broken);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(parsed.status().message(), dropped)) << parsed.status();
  // Without the backbone a LoRA version cannot be served.
  auto no_base = LoadVersionOverlay(f.c, *blob, nullptr, f.be.get());
  EXPECT_EQ(no_base.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace tessera::train
