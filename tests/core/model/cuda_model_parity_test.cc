// The whole model on CUDA against the CPU backend, for each family: identical weights (RandomInit is a
// host-side generator, so one seed gives the same values on both backends) and overlays, then
//   1. a mixed batch (one sequence with a tenant overlay, one without) prefilled into KV caches: logits;
//   2. one decode step of each sequence from those caches: logits;
//   3. a fine-tuning step on two overlay slots: the loss, every slot gradient, and the logits after one
//      AdamW update of the trained copies;
// and the inference forwards again with MoeRouting::kOnDevice (the grouping done by the GPU's kernels).
// f32 everywhere, so the tolerance is summation order only (1e-4 relative; the routing is identical
// unless two router logits tie within that, which these seeds do not).
// bf16: the CUDA model with bf16 weight matrices (its tensor-core path) against the CPU's f32 model on
// the same bf16-rounded weights, so the difference is the bf16 rounding of activations only (2e-2 on
// logits, 5e-2 on gradients, which sum over many rounded products). The router weights are scaled up
// for this comparison so that no token's top-k choice sits within bf16 rounding of a tie (a flipped
// expert is a different function, not a precision error). The AdamW step is not compared in bf16 (its
// first step moves each weight by ~lr * sign(g), so gradients near 0 flip); instead the bf16 model must
// lower its training loss over a few steps. Skips without a GPU.
#include <cmath>
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
#include "tests/core/model/model_runs.h"
#include "tests/core/model/reference_model.h"

namespace tessera::testing_cuda {
namespace {

constexpr double kTol = 1e-4;
constexpr double kBf16LogitTol = 2e-2;
constexpr double kBf16GradTol = 5e-2;

#define ASSERT_OK(expr)                          \
  do {                                           \
    const absl::Status s_ = (expr);              \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_; \
  } while (0)

using testing::ExpectLossFalls;
using testing::ExpectRunsClose;
using testing::ModelRun;
using testing::Must;
using testing::RunOn;
using testing::TrainLosses;
using testing::Weights;

class CudaModelParity : public CudaParityTest, public ::testing::WithParamInterface<ModelFamily> {};

TEST_P(CudaModelParity, ForwardDecodeBackwardAndTrainingStepMatchCpu) {
  const ModelConfig c = testing::SmallConfig(GetParam());
  const ModelRun want = RunOn(*cpu_, c, Weights::kF32);
  const ModelRun got = RunOn(*gpu_, c, Weights::kF32);
  const std::string fam = ModelFamilyName(GetParam());
  ExpectRunsClose(got, want, kTol, kTol, fam);
  ExpectClose(got.step_logits, want.step_logits, kTol, fam + " logits after one AdamW step");
}

TEST_P(CudaModelParity, Bf16WeightsMatchCpuOnTheSameRoundedWeights) {
  const ModelConfig c = testing::SmallConfig(GetParam());
  const ModelRun want = RunOn(*cpu_, c, Weights::kBf16Rounded);
  const ModelRun got = RunOn(*gpu_, c, Weights::kBf16);
  ExpectRunsClose(got, want, kBf16LogitTol, kBf16GradTol, std::string(ModelFamilyName(GetParam())) + " bf16");
}

// MoeRouting::kOnDevice: the grouping on the GPU (MoeSortAssignments, GroupedMatmulByOffsets) against the
// CPU's host plan, f32 and bf16.
TEST_P(CudaModelParity, DeviceRoutingMatchesCpuHostPlan) {
  const ModelConfig c = testing::SmallConfig(GetParam());
  testing::RunInputs on_device;
  on_device.routing = MoeRouting::kOnDevice;
  const std::string fam = ModelFamilyName(GetParam());
  const ModelRun want = RunOn(*cpu_, c, Weights::kF32);
  const ModelRun got = RunOn(*gpu_, c, Weights::kF32, on_device);
  ExpectRunsClose(got, want, kTol, kTol, fam + " device routing");
  ExpectClose(got.step_logits, want.step_logits, kTol, fam + " device routing, logits after one AdamW step");
  const ModelRun want16 = RunOn(*cpu_, c, Weights::kBf16Rounded);
  const ModelRun got16 = RunOn(*gpu_, c, Weights::kBf16, on_device);
  ExpectRunsClose(got16, want16, kBf16LogitTol, kBf16GradTol, fam + " bf16 device routing");
}

TEST_P(CudaModelParity, Bf16TrainingThroughF32MastersLowersTheLoss) {
  const ModelConfig c = testing::SmallConfig(GetParam());
  ExpectLossFalls(TrainLosses(*gpu_, c, testing::RunInputs{}.train, 6), ModelFamilyName(GetParam()));
}

INSTANTIATE_TEST_SUITE_P(Families, CudaModelParity,
                         ::testing::Values(ModelFamily::kMixtral, ModelFamily::kQwen3Moe, ModelFamily::kOlmoe),
                         [](const ::testing::TestParamInfo<ModelFamily>& i) { return std::string(ModelFamilyName(i.param)); });

}  // namespace
}  // namespace tessera::testing_cuda
