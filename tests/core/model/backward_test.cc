// Model::Backward: finite-difference checks of the whole model (both trainable modes, every family),
// consistency between modes, accumulation, and gradient parity with HF transformers' fixtures.
//
// Finite differences: L = mean next-token cross-entropy (Model::Backward's loss), central
// differences (L(w + eps) - L(w - eps)) / (2 eps) with eps = 5e-3 on float32 weights of scale 0.3.
// For each trainable tensor we check its largest-|grad| coordinate and two random ones:
//   |fd - analytic| <= 3e-2 * max(|fd|, |analytic|) + 2e-4.
// (float32 loss rounding ~1e-6 gives ~5e-5 absolute FD noise; eps^2 truncation ~1e-4 relative.) A
// coordinate whose perturbation changes any top-k routing choice is skipped (the loss is not
// differentiable there); at most a few are.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/io/safetensors.h"
#include "core/model/hf_names.h"
#include "core/model/model.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/core/model/reference_model.h"

namespace tessera {
namespace {

struct Batch {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<const ExpertOverlay*> overlays;
  std::vector<SequenceInput> Inputs() const {
    std::vector<SequenceInput> in;
    for (size_t s = 0; s < tokens.size(); ++s) in.push_back({tokens[s], overlays[s], nullptr});
    return in;
  }
  std::vector<int32_t> Targets() const {
    std::vector<int32_t> t;
    for (const auto& seq : tokens) {
      for (size_t i = 0; i < seq.size(); ++i) t.push_back(i + 1 < seq.size() ? seq[i + 1] : -1);
    }
    return t;
  }
};

class BackwardTest : public ::testing::Test {
 protected:
  void Build(ModelFamily family) {
    config_ = testing::SmallConfig(family);
    auto w = ModelWeights::Allocate(config_, be_.get());
    ASSERT_TRUE(w.ok());
    testing::RandomizeWeights(config_, *w, be_.get(), 17);
    // Decisive routing (router logits spread ~4x wider) so that finite-difference steps rarely flip
    // a top-k choice.
    for (LayerWeights& l : w->layers) {
      if (l.router.defined()) ASSERT_TRUE(be_->Scale(l.router, 4.0f).ok());  // (none in a dense layer)
    }
    model_ = Model::Create(config_, *w, be_.get()).value();
  }

  // Mean next-token CE and the routing counts (to detect top-k flips).
  std::pair<double, std::vector<int64_t>> Loss(const Batch& b) {
    std::vector<RoutingStats> routing;
    auto inputs = b.Inputs();
    auto scores = model_->ScoreTokens(inputs, &routing);
    EXPECT_TRUE(scores.ok()) << scores.status();
    double sum = 0;
    int64_t n = 0;
    for (const auto& s : *scores) {
      for (float x : s) {
        sum -= x;
        ++n;
      }
    }
    std::vector<int64_t> counts;
    for (const RoutingStats& r : routing) counts.insert(counts.end(), r.tokens_routed.begin(), r.tokens_routed.end());
    return {sum / n, counts};
  }

  absl::StatusOr<double> RunBackward(const Batch& b, Gradients* g) {
    ForwardOptions opt;
    opt.logits = LogitsMode::kAll;
    opt.save_activations = true;
    auto inputs = b.Inputs();
    auto fwd = model_->Forward(inputs, opt);
    if (!fwd.ok()) return fwd.status();
    std::vector<int32_t> targets = b.Targets();
    return model_->Backward(*fwd, LossTargets{targets}, g);
  }

  // Checks `param` (a tensor the forward reads) against its analytic gradient `grad`.
  void CheckTensor(const std::string& name, Tensor& param, const Tensor& grad, const Batch& b, std::mt19937& rng,
                   int* checked, int* skipped) {
    std::vector<float> p = be_->ToHostF32(param).value();
    std::vector<float> g = be_->ToHostF32(grad).value();
    ASSERT_EQ(p.size(), g.size()) << name;
    std::vector<size_t> coords;
    size_t best = 0;
    for (size_t i = 1; i < g.size(); ++i) {
      if (std::abs(g[i]) > std::abs(g[best])) best = i;
    }
    coords.push_back(best);
    for (int r = 0; r < 2; ++r) coords.push_back(rng() % g.size());
    const auto base = Loss(b);
    const float eps = 5e-3f;
    for (size_t i : coords) {
      const float orig = p[i];
      p[i] = orig + eps;
      ASSERT_TRUE(be_->CopyFromHost(p.data(), p.size() * 4, param).ok());
      const auto plus = Loss(b);
      p[i] = orig - eps;
      ASSERT_TRUE(be_->CopyFromHost(p.data(), p.size() * 4, param).ok());
      const auto minus = Loss(b);
      p[i] = orig;
      ASSERT_TRUE(be_->CopyFromHost(p.data(), p.size() * 4, param).ok());
      if (plus.second != base.second || minus.second != base.second) {
        ++*skipped;
        continue;
      }
      const double fd = (plus.first - minus.first) / (2.0 * eps);
      const double an = g[i];
      EXPECT_NEAR(fd, an, 3e-2 * std::max(std::abs(fd), std::abs(an)) + 2e-4) << name << "[" << i << "]";
      ++*checked;
    }
  }

  Batch MakeBatch(const ExpertOverlay* overlay) {
    Batch b;
    b.tokens = {testing::RandomTokens(6, config_.vocab_size, 101), testing::RandomTokens(5, config_.vocab_size, 102)};
    b.overlays = {overlay, overlay};
    return b;
  }

  std::unique_ptr<Backend> be_ = MakeCpuBackend();
  ModelConfig config_;
  std::unique_ptr<Model> model_;
};

TEST_F(BackwardTest, FiniteDifferencesAllParameters) {
  // qwen2_moe adds q/k/v biases, a gated shared expert and a dense layer; granitemoe every multiplier.
  for (ModelFamily family : {ModelFamily::kQwen3Moe, ModelFamily::kOlmoe, ModelFamily::kMixtral, ModelFamily::kQwen2Moe,
                             ModelFamily::kGraniteMoe, ModelFamily::kDots1}) {
    SCOPED_TRACE(ModelFamilyName(family));
    Build(family);
    Batch b = MakeBatch(nullptr);
    auto grads = Gradients::Create(config_, TrainableSet::All(), be_.get());
    ASSERT_TRUE(grads.ok()) << grads.status();
    auto loss = RunBackward(b, &*grads);
    ASSERT_TRUE(loss.ok()) << loss.status();
    EXPECT_NEAR(*loss, Loss(b).first, 1e-5 * std::abs(*loss));
    std::mt19937 rng(5);
    int checked = 0, skipped = 0;
    std::vector<NamedParam> params = model_->mutable_weights().Parameters(config_);
    std::vector<NamedParam> gparams = grads->Named(config_);
    ASSERT_EQ(params.size(), gparams.size());
    for (size_t i = 0; i < params.size(); ++i) {
      ASSERT_EQ(params[i].name, gparams[i].name);
      CheckTensor(params[i].name, *params[i].tensor, *gparams[i].tensor, b, rng, &checked, &skipped);
    }
    EXPECT_LE(skipped, checked / 10) << "too many routing flips";
    EXPECT_GT(checked, 100);
  }
}

class BackwardSlots : public BackwardTest, public ::testing::WithParamInterface<ModelFamily> {};

TEST_P(BackwardSlots, FiniteDifferencesExpertSlotsWithOverlay) {
  Build(GetParam());
  // Train the most used slot of each layer and a lightly used one, as the tenant's overlay copies.
  Batch probe = MakeBatch(nullptr);
  std::vector<int64_t> counts = Loss(probe).second;
  const int64_t e_count = config_.num_experts, layers = config_.num_layers;
  std::vector<SlotId> slots;
  for (int64_t l = 0; l < layers; ++l) {
    if (config_.IsDenseLayer(l)) continue;
    int64_t best = 0, light = -1;
    for (int64_t e = 0; e < e_count; ++e) {
      const int64_t c = counts[l * e_count + e] + counts[layers * e_count + l * e_count + e];
      const int64_t cb = counts[l * e_count + best] + counts[layers * e_count + l * e_count + best];
      if (c > cb) best = e;
    }
    for (int64_t e = 0; e < e_count; ++e) {
      const int64_t c = counts[l * e_count + e] + counts[layers * e_count + l * e_count + e];
      if (e != best && c > 0 && (light < 0 || c < counts[l * e_count + light] + counts[layers * e_count + l * e_count + light])) light = e;
    }
    slots.push_back({static_cast<int32_t>(l), static_cast<int32_t>(best)});
    if (light >= 0) slots.push_back({static_cast<int32_t>(l), static_cast<int32_t>(light)});
  }
  // The overlay's weights differ from the base (fresh random), so gradients are w.r.t. them.
  std::mt19937 wrng(3);
  std::uniform_real_distribution<float> u(-0.3f, 0.3f);
  std::map<SlotId, ExpertWeights> weights;
  for (SlotId s : slots) {
    ExpertWeights w;
    for (int p = 0; p < 3; ++p) {
      auto shape = ExpertPartShape(config_, p);
      std::vector<float> v(shape[0] * shape[1]);
      for (float& x : v) x = u(wrng);
      (p == 0 ? w.gate : p == 1 ? w.up : w.down) = be_->FromHost(v, shape).value();
    }
    weights[s] = w;
  }
  auto overlay = ExpertOverlay::FromWeights(config_, weights, be_.get()).value();
  Batch b = MakeBatch(overlay.get());
  // The overlay's outputs change the routing of the layers above it: keep the slots this batch uses.
  const std::vector<int64_t> used = Loss(b).second;
  std::erase_if(slots, [&](SlotId s) {
    return used[s.layer * e_count + s.expert] + used[layers * e_count + s.layer * e_count + s.expert] == 0;
  });
  ASSERT_GE(slots.size(), 2u);
  auto grads = Gradients::Create(config_, TrainableSet::Slots(slots), be_.get());
  ASSERT_TRUE(grads.ok());
  EXPECT_EQ(grads->NumElements(), static_cast<int64_t>(slots.size()) * config_.ExpertParameters());
  EXPECT_TRUE(grads->full.layers.empty());  // frozen weights get no buffers
  ASSERT_TRUE(RunBackward(b, &*grads).ok());
  std::mt19937 rng(9);
  int checked = 0, skipped = 0;
  for (SlotId s : slots) {
    ExpertWeights& w = weights[s];
    const ExpertWeights& g = grads->slots.at(s);
    CheckTensor(s.ToString() + ".gate", w.gate, g.gate, b, rng, &checked, &skipped);
    CheckTensor(s.ToString() + ".up", w.up, g.up, b, rng, &checked, &skipped);
    CheckTensor(s.ToString() + ".down", w.down, g.down, b, rng, &checked, &skipped);
    double norm = be_->SumSquares(g.down).value();
    EXPECT_GT(norm, 0.0) << s.ToString();
  }
  EXPECT_LE(skipped, 2);
  EXPECT_GT(checked, 10);
}

INSTANTIATE_TEST_SUITE_P(Families, BackwardSlots,
                         ::testing::Values(ModelFamily::kQwen3Moe, ModelFamily::kQwen2Moe, ModelFamily::kGraniteMoe,
                                           ModelFamily::kDots1),
                         [](const auto& info) { return std::string(ModelFamilyName(info.param)); });

TEST_F(BackwardTest, SlotModeEqualsAllModeOnThoseSlotsAndAccumulates) {
  Build(ModelFamily::kOlmoe);
  Batch b = MakeBatch(nullptr);
  std::vector<SlotId> slots = {{0, 2}, {1, 4}, {1, 0}};
  auto gs = Gradients::Create(config_, TrainableSet::Slots(slots), be_.get()).value();
  auto ga = Gradients::Create(config_, TrainableSet::All(), be_.get()).value();
  ASSERT_TRUE(RunBackward(b, &gs).ok());
  ASSERT_TRUE(RunBackward(b, &ga).ok());
  for (SlotId s : slots) {
    auto x = be_->ToHostF32(gs.slots.at(s).up).value();
    auto y = be_->ToHostF32(ga.full.layers[s.layer].experts[s.expert].up).value();
    for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(x[i], y[i], 1e-6 + 1e-5 * std::abs(y[i])) << s.ToString();
  }
  // A second backward accumulates: exactly twice the first.
  auto once = be_->ToHostF32(gs.slots.at(slots[0]).down).value();
  ASSERT_TRUE(RunBackward(b, &gs).ok());
  auto twice = be_->ToHostF32(gs.slots.at(slots[0]).down).value();
  for (size_t i = 0; i < once.size(); ++i) ASSERT_NEAR(twice[i], 2 * once[i], 1e-6 + 1e-5 * std::abs(once[i]));
  ASSERT_TRUE(gs.Zero(be_.get()).ok());
  EXPECT_EQ(be_->SumSquares(gs.slots.at(slots[0]).down).value(), 0.0);
}

// Slot gradients are disjoint views of Gradients::flat, each on a 256-byte boundary; the padding between
// them stays zero through a backward, so the flat buffer's norm is the slots' norm, and Zero() clears all.
TEST_F(BackwardTest, SlotGradientsAreViewsOfOneFlatBuffer) {
  Build(ModelFamily::kQwen3Moe);
  const std::vector<SlotId> slots = {{1, 3}, {0, 2}, {1, 0}};
  auto g = Gradients::Create(config_, TrainableSet::Slots(slots), be_.get()).value();
  ASSERT_TRUE(g.flat.defined());
  const char* begin = static_cast<const char*>(g.flat.raw());
  const char* end = begin + g.flat.nbytes();
  std::vector<std::pair<const char*, const char*>> ranges;
  for (const auto& [s, w] : g.slots) {
    for (const Tensor* t : {&w.gate, &w.up, &w.down}) {
      const char* p = static_cast<const char*>(t->raw());
      ASSERT_GE(p, begin);
      ASSERT_LE(p + t->nbytes(), end);
      EXPECT_EQ((p - begin) % 256, 0) << s.ToString();
      ranges.push_back({p, p + t->nbytes()});
    }
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) ASSERT_LE(ranges[i - 1].second, ranges[i].first) << "views overlap";

  ASSERT_TRUE(RunBackward(MakeBatch(nullptr), &g).ok());
  double per_slot = 0;
  for (const auto& [s, w] : g.slots) {
    for (const Tensor* t : {&w.gate, &w.up, &w.down}) per_slot += be_->SumSquares(*t).value();
  }
  ASSERT_GT(per_slot, 0.0);
  EXPECT_NEAR(be_->SumSquares(g.flat).value(), per_slot, 1e-12 * per_slot);
  ASSERT_TRUE(g.Zero(be_.get()).ok());
  EXPECT_EQ(be_->SumSquares(g.flat).value(), 0.0);
}

// A bf16 model's Backward takes dlogits in bf16 (the LM head GEMM's operand dtype): the same bits as an
// f32 dlogits rounded by the backward's own conversion, so both routes give identical slot gradients.
TEST_F(BackwardTest, Bf16ModelTakesBf16LogitsGradientWithIdenticalResults) {
  Build(ModelFamily::kQwen3Moe);
  model_ = Model::Create(config_, model_->weights().WithMatrixDtype(config_, DType::kBF16, be_.get()).value(),
                         be_.get())
               .value();
  const Batch b = MakeBatch(nullptr);
  const std::vector<SlotId> slots = {{0, 1}, {1, 2}};
  auto direct = Gradients::Create(config_, TrainableSet::Slots(slots), be_.get()).value();
  auto via_f32 = Gradients::Create(config_, TrainableSet::Slots(slots), be_.get()).value();
  ASSERT_TRUE(RunBackward(b, &direct).ok());

  ForwardOptions opt;
  opt.logits = LogitsMode::kAll;
  opt.save_activations = true;
  auto inputs = b.Inputs();
  auto fwd = model_->Forward(inputs, opt).value();
  const std::vector<int32_t> t = b.Targets();
  const int64_t n = static_cast<int64_t>(t.size()), supervised = std::count_if(t.begin(), t.end(), [](int32_t x) {
    return x >= 0;
  });
  Tensor tgt = be_->FromHost(t, {n}).value(), loss = be_->Alloc({n}, DType::kF32).value();
  Tensor lse = be_->Alloc({n}, DType::kF32).value(), dloss = be_->Alloc({n}, DType::kF32).value();
  ASSERT_TRUE(be_->CrossEntropyForward(fwd.logits, tgt, loss, &lse).ok());
  ASSERT_TRUE(be_->Fill(dloss, static_cast<float>(1.0 / static_cast<double>(supervised))).ok());
  Tensor dlogits = be_->Alloc({n, config_.vocab_size}, DType::kF32).value();
  ASSERT_TRUE(be_->CrossEntropyBackward(fwd.logits, tgt, lse, dloss, dlogits).ok());
  ASSERT_TRUE(model_->BackwardFromLogits(fwd, dlogits, &via_f32).ok());
  for (SlotId s : slots) {
    for (int part = 0; part < 3; ++part) {
      const Tensor& x = part == 0 ? direct.slots.at(s).gate : part == 1 ? direct.slots.at(s).up : direct.slots.at(s).down;
      const Tensor& y = part == 0 ? via_f32.slots.at(s).gate : part == 1 ? via_f32.slots.at(s).up : via_f32.slots.at(s).down;
      EXPECT_EQ(be_->ToHostF32(x).value(), be_->ToHostF32(y).value()) << s.ToString() << " part " << part;
    }
  }
}

TEST_F(BackwardTest, Errors) {
  Build(ModelFamily::kQwen3Moe);
  Batch b = MakeBatch(nullptr);
  EXPECT_FALSE(Gradients::Create(config_, TrainableSet::Slots({{2, 0}}), be_.get()).ok());
  EXPECT_FALSE(Gradients::Create(config_, TrainableSet::Slots({{0, 1}, {0, 1}}), be_.get()).ok());
  auto g = Gradients::Create(config_, TrainableSet::All(), be_.get()).value();
  auto inputs = b.Inputs();
  auto fwd = model_->Forward(inputs, {LogitsMode::kAll, false, false}).value();
  std::vector<int32_t> targets = b.Targets();
  EXPECT_EQ(model_->Backward(fwd, {targets}, &g).status().code(), absl::StatusCode::kFailedPrecondition);
  auto saved = model_->Forward(inputs, {LogitsMode::kAll, false, true}).value();
  std::vector<int32_t> short_targets(3, 1);
  EXPECT_EQ(model_->Backward(saved, {short_targets}, &g).status().code(), absl::StatusCode::kInvalidArgument);
  // All-parameters training rejects overlay sequences.
  auto ov = ExpertOverlay::CopyOfBase(config_, model_->weights(), std::vector<SlotId>{{0, 0}}, be_.get()).value();
  Batch bo = MakeBatch(ov.get());
  auto in2 = bo.Inputs();
  auto f2 = model_->Forward(in2, {LogitsMode::kAll, false, true}).value();
  EXPECT_EQ(model_->Backward(f2, {targets}, &g).status().code(), absl::StatusCode::kFailedPrecondition);
}

// ---------------------------------------------------------------------------------------------------
// Gradient parity with transformers (tests/fixtures/hf/*/grads.safetensors; loss defined in
// expected.json "grad.loss": mean next-token CE over both sequences). Tolerance per tensor:
// max |got - want| <= 1e-4 * max |want| + 1e-7.

std::filesystem::path FixtureRoot() {
  const char* src = std::getenv("TESSERA_SOURCE_DIR");
  return std::filesystem::path(src != nullptr ? src : ".") / "tests" / "fixtures" / "hf";
}

TEST(GradParityTest, MatchesTransformers) {
  int variants = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(FixtureRoot(), ec)) {
    const auto dir = entry.path();
    if (!std::filesystem::exists(dir / "grads.safetensors")) continue;
    SCOPED_TRACE(dir.filename().string());
    ++variants;
    auto be = MakeCpuBackend();
    auto config = ModelConfig::FromFile(dir.string()).value();
    auto weights = ModelWeights::LoadFromPath(config, dir.string(), be.get()).value();
    auto model = Model::Create(config, weights, be.get()).value();
    std::ifstream in(dir / "expected.json");
    nlohmann::json grad = nlohmann::json::parse(in)["grad"];
    std::vector<SlotId> slots;
    for (const auto& s : grad["slots"]) slots.push_back({s[0].get<int32_t>(), s[1].get<int32_t>()});
    // Train the tenant's copies of the slots (initialized from the base), as a fine-tune does.
    auto overlay = ExpertOverlay::CopyOfBase(config, model->weights(), slots, be.get()).value();
    std::vector<std::vector<int32_t>> seqs = grad["sequences"].get<std::vector<std::vector<int32_t>>>();
    std::vector<SequenceInput> inputs;
    std::vector<int32_t> targets;
    for (const auto& s : seqs) {
      inputs.push_back({s, overlay.get(), nullptr});
      for (size_t i = 0; i < s.size(); ++i) targets.push_back(i + 1 < s.size() ? s[i + 1] : -1);
    }
    auto fwd = model->Forward(inputs, {LogitsMode::kAll, false, true});
    ASSERT_TRUE(fwd.ok()) << fwd.status();
    auto g = Gradients::Create(config, TrainableSet::Slots(slots), be.get()).value();
    auto loss = model->Backward(*fwd, {targets}, &g);
    ASSERT_TRUE(loss.ok()) << loss.status();
    EXPECT_NEAR(*loss, grad["loss_value"].get<double>(), 1e-5 * grad["loss_value"].get<double>());
    auto file = io::SafetensorsFile::Open((dir / "grads.safetensors").string()).value();
    int compared = 0;
    for (const NamedParam& p : g.Named(config)) {
      auto want = file->ReadF32("grad." + p.name);
      ASSERT_TRUE(want.ok()) << p.name << ": " << want.status();
      std::vector<float> got = be->ToHostF32(*p.tensor).value();
      ASSERT_EQ(got.size(), want->size());
      double mx = 0, err = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        mx = std::max(mx, static_cast<double>(std::abs((*want)[i])));
        err = std::max(err, static_cast<double>(std::abs(got[i] - (*want)[i])));
      }
      EXPECT_LE(err, 1e-4 * mx + 1e-7) << p.name << " max|want| " << mx;
      ++compared;
    }
    EXPECT_EQ(compared, static_cast<int>(3 * slots.size()));
  }
  EXPECT_GE(variants, 10);
}

}  // namespace
}  // namespace tessera
