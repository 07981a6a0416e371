// Whole-model runs shared by the model parity tests (CPU bf16 vs CPU f32, CUDA vs CPU): one backend
// prefills a mixed batch into KV caches, decodes a step, and takes a fine-tuning step on two overlay
// slots, returning everything on the host; and a few-step bf16 training run through f32 masters.
#pragma once

#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/model/config.h"
#include "core/model/kv_block_pool.h"
#include "core/model/kv_cache.h"
#include "core/model/model.h"
#include "core/model/overlay.h"
#include "core/model/weights.h"
#include "core/train/adamw_state.h"
#include "gtest/gtest.h"
#include "tests/core/backend_cuda/cuda_test_util.h"
#include "tests/core/model/random_overlay.h"

namespace tessera::testing {

// Router weights are scaled up for bf16 comparisons so that no token's top-k choice sits within bf16
// rounding of a tie (a flipped expert is a different function, not a precision error).
constexpr float kBf16RouterScale = 30.0f;

template <typename T>
T Must(absl::StatusOr<T> v) {
  EXPECT_TRUE(v.ok()) << v.status();
  return std::move(*v);
}

// Everything one backend computes, copied to the host for comparison.
struct ModelRun {
  std::vector<float> prefill_logits, decode_logits, step_logits;
  double loss = 0.0;
  std::map<std::string, std::vector<float>> grads;  // "L.E.part"
};

// How one run holds its weights: f32 as initialized; f32 holding bf16-rounded values (the CPU
// reference of a bf16 run); or bf16 (the CUDA tensor-core path).
enum class Weights { kF32, kBf16Rounded, kBf16 };

// The overlay `o` re-made in `dtype` (through its f32 safetensors form; f32 -> bf16 rounds).
inline std::shared_ptr<const ExpertOverlay> InDtype(const ModelConfig& c, const ExpertOverlay& o, Backend& b, DType dtype) {
  return Must(ExpertOverlay::FromSafetensors(c, Must(o.Serialize()), &b, "", dtype));
}

// What every parity run feeds the model: two prompts (the first with a tenant overlay), one decode token
// each, and two training sequences.
struct RunInputs {
  std::vector<std::vector<int32_t>> prompts = {{3, 14, 15, 9, 2, 6, 5}, {35, 8, 9, 7, 9}};
  std::vector<int32_t> next = {23, 8};
  std::vector<std::vector<int32_t>> train = {{1, 4, 1, 5, 9, 2, 6, 5, 3}, {2, 7, 1, 8, 2, 8}};
  // How the inference forwards (prefill, decode, the logits after the step) group the MoE assignments;
  // the training forward always uses the host plan (Backward needs it).
  MoeRouting routing = MoeRouting::kHostPlan;
};

inline ModelRun RunOn(Backend& b, const ModelConfig& c, Weights mode, const RunInputs& in = {}) {
  const std::vector<std::vector<int32_t>>& prompts = in.prompts;
  const std::vector<int32_t>& next = in.next;
  const std::vector<std::vector<int32_t>>& train_seqs = in.train;
  ModelRun r;
  ModelWeights weights = Must(ModelWeights::RandomInit(c, 77, &b));
  const std::vector<SlotId> tenant_slots = {{0, 1}, {1, 3}};
  std::shared_ptr<const ExpertOverlay> tenant = Must(RandomOverlay(c, &b, tenant_slots, 5));
  if (mode != Weights::kF32) {
    for (LayerWeights& l : weights.layers) {
      if (l.router.defined()) EXPECT_TRUE(b.Scale(l.router, kBf16RouterScale).ok());  // (none in a dense layer)
    }
    weights = Must(weights.WithMatrixDtype(c, DType::kBF16, &b));
    tenant = InDtype(c, *tenant, b, DType::kBF16);
    if (mode == Weights::kBf16Rounded) {
      weights = Must(weights.WithMatrixDtype(c, DType::kF32, &b));
      tenant = InDtype(c, *tenant, b, DType::kF32);
    }
  }
  const DType mdt = weights.matrix_dtype();
  std::unique_ptr<Model> model = Must(Model::Create(c, std::move(weights), &b));
  auto host = [&b](const Tensor& t) { return Must(b.ToHostF32(t)); };

  // 1-2. Prefill into caches, then one decode step each.
  // Sequence 0 in a contiguous cache, sequence 1 in a paged one whose blocks interleave with another
  // cache's (so its gather crosses storage jumps): both layouts on every backend.
  std::unique_ptr<KvBlockPool> pool = Must(KvBlockPool::Create(c, 16, 4, &b, mdt));  // outlives its caches
  std::vector<std::unique_ptr<KvCache>> caches;
  caches.push_back(Must(KvCache::Create(c, 32, &b, mdt)));
  caches.push_back(Must(KvCache::CreatePaged(pool.get(), 32)));
  std::unique_ptr<KvCache> other = Must(KvCache::CreatePaged(pool.get(), 32));
  for (int64_t n = 4; n <= 16; n += 4) {
    EXPECT_TRUE(other->Reserve(n).ok());
    EXPECT_TRUE(caches[1]->Reserve(n).ok());
  }
  std::vector<SequenceInput> batch = {SequenceInput{prompts[0], tenant.get(), caches[0].get()},
                                      SequenceInput{prompts[1], nullptr, caches[1].get()}};
  ForwardOptions all;
  all.logits = LogitsMode::kAll;
  all.moe_routing = in.routing;
  ForwardOptions last;
  last.moe_routing = in.routing;
  r.prefill_logits = host(Must(model->Forward(batch, all)).logits);
  std::vector<std::vector<int32_t>> one = {{next[0]}, {next[1]}};
  batch[0].tokens = one[0];
  batch[1].tokens = one[1];
  r.decode_logits = host(Must(model->Forward(batch, last)).logits);

  // 3. One fine-tuning step of the trainable copies of two slots.
  const std::vector<SlotId> train_slots = {{0, 2}, {1, 3}};
  std::shared_ptr<const ExpertOverlay> copy = Must(ExpertOverlay::CopyOfBase(c, model->weights(), train_slots, &b));
  Gradients grads = Must(Gradients::Create(c, TrainableSet::Slots(train_slots), &b));
  std::vector<SequenceInput> tb;
  std::vector<int32_t> targets;
  for (const auto& s : train_seqs) {
    tb.push_back(SequenceInput{s, copy.get(), nullptr});
    for (size_t t = 0; t < s.size(); ++t) targets.push_back(t + 1 < s.size() ? s[t + 1] : -1);
  }
  ForwardOptions save = all;
  save.save_activations = true;
  save.moe_routing = MoeRouting::kHostPlan;
  ForwardResult fr = Must(model->Forward(tb, save));
  r.loss = Must(model->Backward(fr, LossTargets{targets}, &grads));
  AdamWParams p;
  p.lr = 1e-2f;
  p.step = 1;
  for (const auto& [slot, w] : copy->slots()) {
    const ExpertWeights& g = grads.slots.at(slot);
    const std::string key = std::to_string(slot.layer) + "." + std::to_string(slot.expert);
    r.grads[key + ".gate"] = host(g.gate);
    r.grads[key + ".up"] = host(g.up);
    r.grads[key + ".down"] = host(g.down);
    for (auto [param, gr] : {std::pair{w.gate, g.gate}, std::pair{w.up, g.up}, std::pair{w.down, g.down}}) {
      Tensor m = Must(b.Zeros(param.shape())), v = Must(b.Zeros(param.shape()));
      const absl::Status s = b.AdamW(param, gr, m, v, p);  // the copy's tensors are updated in place
      EXPECT_TRUE(s.ok()) << s;
    }
  }
  r.step_logits = host(Must(model->Forward(tb, all)).logits);
  return r;
}

// Mean training loss of `seqs` after each of `steps` AdamW steps on `slots` (bf16 weights on `b`,
// trained through f32 master copies of the slots, as a mixed-precision trainer does).
inline std::vector<double> TrainLosses(Backend& b, const ModelConfig& c, const std::vector<std::vector<int32_t>>& seqs,
                                int steps) {
  ModelWeights w32 = Must(ModelWeights::RandomInit(c, 77, &b));
  std::unique_ptr<Model> model = Must(Model::Create(c, Must(w32.WithMatrixDtype(c, DType::kBF16, &b)), &b));
  const std::vector<SlotId> slots = {{0, 0}, {0, 2}, {1, 1}, {1, 3}};
  std::shared_ptr<const ExpertOverlay> copy = Must(ExpertOverlay::CopyOfBase(c, model->weights(), slots, &b));
  EXPECT_EQ(copy->dtype(), DType::kBF16);
  Gradients grads = Must(Gradients::Create(c, TrainableSet::Slots(slots), &b));
  struct Trained {
    Tensor param, grad;
    train::AdamWState opt;  // with an f32 master: the parameters are bf16
  };
  std::vector<Trained> trained;
  for (const auto& [slot, w] : copy->slots()) {
    const ExpertWeights& g = grads.slots.at(slot);
    for (auto [param, gr] : {std::pair{w.gate, g.gate}, std::pair{w.up, g.up}, std::pair{w.down, g.down}}) {
      trained.push_back(Trained{param, gr, Must(train::AdamWState::Create(b, param))});
    }
  }
  std::vector<SequenceInput> tb;
  std::vector<int32_t> targets;
  for (const auto& s : seqs) {
    tb.push_back(SequenceInput{s, copy.get(), nullptr});
    for (size_t t = 0; t < s.size(); ++t) targets.push_back(t + 1 < s.size() ? s[t + 1] : -1);
  }
  ForwardOptions save;
  save.logits = LogitsMode::kAll;
  save.save_activations = true;
  std::vector<double> losses;
  for (int step = 1; step <= steps; ++step) {
    EXPECT_TRUE(grads.Zero(&b).ok());
    ForwardResult fr = Must(model->Forward(tb, save));
    losses.push_back(Must(model->Backward(fr, LossTargets{targets}, &grads)));
    AdamWParams p;
    p.lr = 3e-2f;
    p.step = step;
    for (Trained& t : trained) EXPECT_TRUE(t.opt.Step(b, t.param, t.grad, p).ok());
  }
  return losses;
}

// `got` against `want`: prefill and decode logits and the loss within logit_tol, every slot gradient
// within grad_tol (testing_cuda::ExpectClose: relative L2 plus an elementwise bound).
inline void ExpectRunsClose(const ModelRun& got, const ModelRun& want, double logit_tol, double grad_tol,
                            const std::string& what) {
  testing_cuda::ExpectClose(got.prefill_logits, want.prefill_logits, logit_tol, what + " prefill logits");
  testing_cuda::ExpectClose(got.decode_logits, want.decode_logits, logit_tol, what + " decode logits");
  EXPECT_NEAR(got.loss, want.loss, logit_tol * want.loss) << what;
  ASSERT_EQ(got.grads.size(), want.grads.size()) << what;
  for (const auto& [name, g] : want.grads) testing_cuda::ExpectClose(got.grads.at(name), g, grad_tol, what + " grad " + name);
}

// TrainLosses' 6 steps: finite, and the last at least 3% below the first.
inline void ExpectLossFalls(const std::vector<double>& losses, const std::string& what) {
  ASSERT_EQ(losses.size(), 6u) << what;
  for (double l : losses) EXPECT_TRUE(std::isfinite(l)) << what;
  EXPECT_LT(losses.back(), losses.front() * 0.97) << what << ": first " << losses.front() << ", last " << losses.back();
}

}  // namespace tessera::testing
