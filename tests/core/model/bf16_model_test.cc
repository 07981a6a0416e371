// The model with bf16 weight matrices on the CPU backend (narrow storage, cpu_narrow_storage.h) against
// the f32 model on the same bf16-rounded weights, for each family: a mixed tenant batch prefilled into
// bf16 KV caches, one decode step, and a fine-tuning step's loss and slot gradients. The difference is
// the bf16 rounding of stored activations only (2e-2 on logits, 5e-2 on gradients). This is the CPU
// twin of core_model_cuda_test's bf16 case: it checks the model's dtype plumbing (every GEMM's operands
// share a dtype, statistics stay f32) where CI can run it. Training through f32 masters must lower the
// loss.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/core/backend_cuda/cuda_test_util.h"
#include "tests/core/model/model_runs.h"
#include "tests/core/model/reference_model.h"

namespace tessera::testing {
namespace {

constexpr double kBf16LogitTol = 2e-2;
constexpr double kBf16GradTol = 5e-2;

class Bf16Model : public ::testing::TestWithParam<ModelFamily> {};

TEST_P(Bf16Model, MatchesF32OnTheSameRoundedWeights) {
  const ModelConfig c = SmallConfig(GetParam());
  std::unique_ptr<Backend> cpu = MakeCpuBackend();
  const ModelRun want = RunOn(*cpu, c, Weights::kBf16Rounded);
  const ModelRun got = RunOn(*cpu, c, Weights::kBf16);
  ExpectRunsClose(got, want, kBf16LogitTol, kBf16GradTol, std::string(ModelFamilyName(GetParam())) + " bf16");
  EXPECT_NE(got.prefill_logits, want.prefill_logits) << "the bf16 run must actually round its activations";
}

TEST_P(Bf16Model, TrainingThroughF32MastersLowersTheLoss) {
  std::unique_ptr<Backend> cpu = MakeCpuBackend();
  ExpectLossFalls(TrainLosses(*cpu, SmallConfig(GetParam()), RunInputs{}.train, 6), ModelFamilyName(GetParam()));
}

INSTANTIATE_TEST_SUITE_P(Families, Bf16Model,
                         ::testing::Values(ModelFamily::kMixtral, ModelFamily::kQwen3Moe, ModelFamily::kOlmoe),
                         [](const ::testing::TestParamInfo<ModelFamily>& i) { return std::string(ModelFamilyName(i.param)); });

}  // namespace
}  // namespace tessera::testing
