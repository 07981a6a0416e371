// The whole model on CUDA against the CPU backend, for each family: identical weights (RandomInit is a
// host-side generator, so one seed gives the same values on both backends) and overlays, then
//   1. a mixed batch (one sequence with a tenant overlay, one without) prefilled into KV caches: logits;
//   2. one decode step of each sequence from those caches: logits;
//   3. a fine-tuning step on two overlay slots: the loss, every slot gradient, and the logits after one
//      AdamW update of the trained copies.
// f32 everywhere, so the tolerance is summation order only (1e-4 relative; the routing is identical
// unless two router logits tie within that, which these seeds do not). Skips without a GPU.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/model/config.h"
#include "core/model/kv_cache.h"
#include "core/model/model.h"
#include "core/model/overlay.h"
#include "core/model/weights.h"
#include "tests/core/backend_cuda/cuda_test_util.h"
#include "tests/core/model/random_overlay.h"
#include "tests/core/model/reference_model.h"

namespace tessera::testing_cuda {
namespace {

constexpr double kTol = 1e-4;

#define ASSERT_OK(expr)                          \
  do {                                           \
    const absl::Status s_ = (expr);              \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_; \
  } while (0)

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

ModelRun RunOn(Backend& b, const ModelConfig& c, const std::vector<std::vector<int32_t>>& prompts,
          const std::vector<int32_t>& next, const std::vector<std::vector<int32_t>>& train_seqs) {
  ModelRun r;
  std::unique_ptr<Model> model = Must(Model::Create(c, Must(ModelWeights::RandomInit(c, 77, &b)), &b));
  const std::vector<SlotId> tenant_slots = {{0, 1}, {1, 3}};
  std::shared_ptr<const ExpertOverlay> tenant = Must(RandomOverlay(c, &b, tenant_slots, 5));
  auto host = [&b](const Tensor& t) {
    std::vector<float> v(t.numel());
    const absl::Status s = b.CopyToHost(t, v.data(), v.size() * sizeof(float));
    EXPECT_TRUE(s.ok()) << s;
    return v;
  };

  // 1-2. Prefill into caches, then one decode step each.
  std::vector<std::unique_ptr<KvCache>> caches;
  for (size_t i = 0; i < prompts.size(); ++i) caches.push_back(Must(KvCache::Create(c, 32, &b)));
  std::vector<SequenceInput> batch = {SequenceInput{prompts[0], tenant.get(), caches[0].get()},
                                      SequenceInput{prompts[1], nullptr, caches[1].get()}};
  ForwardOptions all;
  all.logits = LogitsMode::kAll;
  r.prefill_logits = host(Must(model->Forward(batch, all)).logits);
  std::vector<std::vector<int32_t>> one = {{next[0]}, {next[1]}};
  batch[0].tokens = one[0];
  batch[1].tokens = one[1];
  r.decode_logits = host(Must(model->Forward(batch)).logits);

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

class CudaModelParity : public CudaParityTest, public ::testing::WithParamInterface<ModelFamily> {};

TEST_P(CudaModelParity, ForwardDecodeBackwardAndTrainingStepMatchCpu) {
  const ModelConfig c = testing::SmallConfig(GetParam());
  const std::vector<std::vector<int32_t>> prompts = {{3, 14, 15, 9, 2, 6, 5}, {35, 8, 9, 7, 9}};
  const std::vector<int32_t> next = {23, 8};
  const std::vector<std::vector<int32_t>> train = {{1, 4, 1, 5, 9, 2, 6, 5, 3}, {2, 7, 1, 8, 2, 8}};
  const ModelRun want = RunOn(*cpu_, c, prompts, next, train);
  const ModelRun got = RunOn(*gpu_, c, prompts, next, train);
  const std::string fam = ModelFamilyName(GetParam());
  ExpectClose(got.prefill_logits, want.prefill_logits, kTol, fam + " prefill logits");
  ExpectClose(got.decode_logits, want.decode_logits, kTol, fam + " decode logits");
  EXPECT_NEAR(got.loss, want.loss, kTol * want.loss) << fam;
  ASSERT_EQ(got.grads.size(), want.grads.size());
  for (const auto& [name, g] : want.grads) ExpectClose(got.grads.at(name), g, kTol, fam + " grad " + name);
  ExpectClose(got.step_logits, want.step_logits, kTol, fam + " logits after one AdamW step");
}

INSTANTIATE_TEST_SUITE_P(Families, CudaModelParity,
                         ::testing::Values(ModelFamily::kMixtral, ModelFamily::kQwen3Moe, ModelFamily::kOlmoe),
                         [](const ::testing::TestParamInfo<ModelFamily>& i) { return std::string(ModelFamilyName(i.param)); });

}  // namespace
}  // namespace tessera::testing_cuda
