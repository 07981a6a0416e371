// MoeRouting::kOnDevice against the host plan on the CPU backend: the device path forms the same groups
// in the same order (MoeDeviceTables + Backend::MoeSortAssignments), so every output is bitwise equal —
// prefill and multi-step decode of a batch mixing three tenants and the base, f32 and bf16, the routing
// statistics and group counts read back at the forward's end — and save_activations refuses it.
#include <memory>
#include <string>
#include <vector>

#include "core/model/kv_cache.h"
#include "core/model/model.h"
#include "gtest/gtest.h"
#include "tests/core/model/model_runs.h"
#include "tests/core/model/reference_model.h"

namespace tessera {
namespace {

using testing::Must;

class DeviceRouting : public ::testing::TestWithParam<ModelFamily> {};

// The parity run of model_runs.h (prefill into caches, a decode step, logits after a training step) is
// bitwise the same with device routing, in f32 and bf16.
TEST_P(DeviceRouting, ParityRunIsBitwiseTheSame) {
  const ModelConfig c = testing::SmallConfig(GetParam());
  std::unique_ptr<Backend> cpu = MakeCpuBackend();
  testing::RunInputs on_device;
  on_device.routing = MoeRouting::kOnDevice;
  for (testing::Weights mode : {testing::Weights::kF32, testing::Weights::kBf16}) {
    const testing::ModelRun want = testing::RunOn(*cpu, c, mode);
    const testing::ModelRun got = testing::RunOn(*cpu, c, mode, on_device);
    const std::string what = std::string(ModelFamilyName(GetParam())) + (mode == testing::Weights::kF32 ? " f32" : " bf16");
    EXPECT_EQ(got.prefill_logits, want.prefill_logits) << what;
    EXPECT_EQ(got.decode_logits, want.decode_logits) << what;
    EXPECT_EQ(got.step_logits, want.step_logits) << what;
  }
}

// Four sequences (three tenants with overlapping slots, one base) prefilled, then decoded for five steps
// with each routing: logits, routing statistics and group counts equal at every step.
TEST_P(DeviceRouting, MixedTenantDecodeMatchesHostPlanStepByStep) {
  const ModelConfig c = testing::SmallConfig(GetParam());
  std::unique_ptr<Backend> be = MakeCpuBackend();
  std::unique_ptr<Model> model = Must(Model::Create(c, Must(ModelWeights::RandomInit(c, 5, be.get())), be.get()));
  std::vector<std::shared_ptr<const ExpertOverlay>> tenants = {
      Must(RandomOverlay(c, be.get(), {{0, 0}, {0, 1}, {1, 2}}, 11)),
      Must(RandomOverlay(c, be.get(), {{0, 1}, {1, 1}, {1, 3}}, 12)),
      Must(RandomOverlay(c, be.get(), {{1, 0}, {1, 2}}, 13))};
  const std::vector<const ExpertOverlay*> seq_overlay = {tenants[0].get(), nullptr, tenants[1].get(), tenants[2].get()};
  std::vector<std::vector<int32_t>> prompts = {testing::RandomTokens(9, c.vocab_size, 1),
                                               testing::RandomTokens(4, c.vocab_size, 2),
                                               testing::RandomTokens(7, c.vocab_size, 3),
                                               testing::RandomTokens(5, c.vocab_size, 4)};
  struct Side {
    std::vector<std::unique_ptr<KvCache>> caches;
    ForwardOptions opt;
  };
  Side host, device;
  host.opt.moe_routing = MoeRouting::kHostPlan;
  device.opt.moe_routing = MoeRouting::kOnDevice;
  for (Side* side : {&host, &device}) {
    side->opt.collect_routing = true;
    for (size_t s = 0; s < prompts.size(); ++s) side->caches.push_back(Must(KvCache::Create(c, 32, be.get())));
  }
  std::vector<std::vector<int32_t>> tokens = prompts;
  int64_t overlay_groups = 0;
  for (int step = 0; step < 6; ++step) {  // step 0: prefill; then five decode steps
    std::vector<ForwardResult> out;
    for (Side* side : {&host, &device}) {
      std::vector<SequenceInput> batch;
      for (size_t s = 0; s < tokens.size(); ++s) batch.push_back({tokens[s], seq_overlay[s], side->caches[s].get()});
      out.push_back(Must(model->Forward(batch, side->opt)));
    }
    const std::string what = std::string(ModelFamilyName(GetParam())) + " step " + std::to_string(step);
    std::vector<float> lh = Must(be->ToHostF32(out[0].logits)), ld = Must(be->ToHostF32(out[1].logits));
    ASSERT_EQ(ld, lh) << what;
    EXPECT_EQ(out[1].groups_per_layer, out[0].groups_per_layer) << what;
    EXPECT_EQ(out[1].overlay_groups_per_layer, out[0].overlay_groups_per_layer) << what;
    ASSERT_EQ(out[1].groups_per_layer.size(), static_cast<size_t>(c.num_layers)) << what;
    for (int64_t g : out[1].overlay_groups_per_layer) overlay_groups += g;
    ASSERT_EQ(out[1].routing.size(), tokens.size()) << what;
    for (size_t s = 0; s < tokens.size(); ++s) {
      const RoutingStats &a = out[0].routing[s], &b = out[1].routing[s];
      EXPECT_EQ(b.tokens, a.tokens) << what;
      EXPECT_EQ(b.tokens_routed, a.tokens_routed) << what << " seq " << s;
      EXPECT_EQ(b.overlay_tokens, a.overlay_tokens) << what << " seq " << s;
      EXPECT_EQ(b.gate_weight_sum, a.gate_weight_sum) << what << " seq " << s;
      EXPECT_EQ(b.entropy_sum, a.entropy_sum) << what << " seq " << s;
    }
    // Greedy next tokens (the same on both sides, as the logits are).
    for (size_t s = 0; s < tokens.size(); ++s) {
      const float* row = lh.data() + s * c.vocab_size;
      tokens[s] = {static_cast<int32_t>(std::max_element(row, row + c.vocab_size) - row)};
    }
  }
  EXPECT_GT(overlay_groups, 0) << "the batch never routed to a tenant's slot: the test does not exercise overlays";
}

TEST(DeviceRoutingOptions, SaveActivationsRequiresTheHostPlan) {
  const ModelConfig c = testing::SmallConfig(ModelFamily::kQwen3Moe);
  std::unique_ptr<Backend> be = MakeCpuBackend();
  std::unique_ptr<Model> model = Must(Model::Create(c, Must(ModelWeights::RandomInit(c, 5, be.get())), be.get()));
  std::vector<int32_t> toks = {1, 2, 3};
  SequenceInput in{toks, nullptr, nullptr};
  ForwardOptions opt;
  opt.logits = LogitsMode::kAll;
  opt.save_activations = true;
  opt.moe_routing = MoeRouting::kOnDevice;
  absl::StatusOr<ForwardResult> r = model->Forward({&in, 1}, opt);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("kHostPlan"), std::string::npos) << r.status();
}

INSTANTIATE_TEST_SUITE_P(Families, DeviceRouting,
                         ::testing::Values(ModelFamily::kQwen3Moe, ModelFamily::kOlmoe, ModelFamily::kMixtral,
                                           ModelFamily::kQwen2Moe, ModelFamily::kGraniteMoe),
                         [](const auto& info) { return std::string(ModelFamilyName(info.param)); });

}  // namespace
}  // namespace tessera
