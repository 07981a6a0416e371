// services/model_host: the backbone is loaded once and shared. Models made over one SharedBackbone read
// the very same weight memory (no copy per job) on backends of their own, compute the same logits as a
// model that loaded the backbone itself, and keep the weights alive after the backbone handle is gone.
#include "services/model_host.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace tessera::services {
namespace {

std::vector<float> Logits(const LoadedModel& m) {
  const std::vector<int32_t> tokens = {257, 72, 105, 33};
  absl::StatusOr<ForwardResult> r = m.model->Forward({SequenceInput{tokens, nullptr, nullptr}});
  EXPECT_TRUE(r.ok()) << r.status();
  std::vector<float> v(r->logits.numel());
  EXPECT_TRUE(m.backend->CopyToHost(r->logits, v.data(), v.size() * sizeof(float)).ok());
  return v;
}

TEST(ModelHostTest, ModelsOverOneBackboneShareItsWeights) {
  absl::StatusOr<std::shared_ptr<const SharedBackbone>> b = LoadSharedBackbone("random:tiny", "cpu");
  ASSERT_TRUE(b.ok()) << b.status();
  absl::StatusOr<std::unique_ptr<LoadedModel>> serving = ModelOn(*b);
  absl::StatusOr<std::unique_ptr<LoadedModel>> training = ModelOn(*b);
  ASSERT_TRUE(serving.ok() && training.ok());
  EXPECT_NE((*serving)->backend.get(), (*training)->backend.get());
  const ModelWeights& ws = (*serving)->model->weights();
  const ModelWeights& wt = (*training)->model->weights();
  EXPECT_EQ(ws.embed.raw(), (*b)->weights.embed.raw());
  EXPECT_EQ(wt.embed.raw(), (*b)->weights.embed.raw());
  EXPECT_EQ(wt.layers[1].experts[3].gate.raw(), ws.layers[1].experts[3].gate.raw());
  EXPECT_EQ((*serving)->info.name, "random:tiny");

  absl::StatusOr<std::unique_ptr<LoadedModel>> own = LoadModel("random:tiny", "cpu");
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_NE((*own)->model->weights().embed.raw(), ws.embed.raw());
  const std::vector<float> want = Logits(**own);
  EXPECT_EQ(Logits(**serving), want);

  b->reset();  // the models keep the backbone (and its weights) alive
  serving->reset();
  EXPECT_EQ(Logits(**training), want);
}

TEST(ModelHostTest, ErrorsNameTheFlag) {
  absl::StatusOr<std::shared_ptr<const SharedBackbone>> bad_device = LoadSharedBackbone("random:tiny", "tpu");
  ASSERT_FALSE(bad_device.ok());
  EXPECT_NE(std::string(bad_device.status().message()).find("--device tpu"), std::string::npos) << bad_device.status();
  absl::StatusOr<std::shared_ptr<const SharedBackbone>> bad_backbone = LoadSharedBackbone("random:huge", "cpu");
  ASSERT_FALSE(bad_backbone.ok());
  EXPECT_EQ(bad_backbone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(bad_backbone.status().message()).find("--backbone random:huge"), std::string::npos);
}

TEST(ModelHostTest, UnknownDtypeIsRefusedNamingTheFlag) {
  absl::StatusOr<std::shared_ptr<const SharedBackbone>> f16 = LoadSharedBackbone("random:tiny", "cpu", "f16");
  ASSERT_FALSE(f16.ok());
  EXPECT_EQ(f16.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(f16.status().message()).find("--dtype: expected auto, f32 or bf16"), std::string::npos) << f16.status();
  EXPECT_TRUE(ValidateDtype("bf16").ok());
  EXPECT_TRUE(ValidateDtype("f32").ok());
  EXPECT_TRUE(ValidateDtype("auto").ok());
  // auto on an f32 backbone (random: weights are made in f32) serves f32.
  absl::StatusOr<std::shared_ptr<const SharedBackbone>> automatic = LoadSharedBackbone("random:tiny", "cpu", "auto");
  ASSERT_TRUE(automatic.ok()) << automatic.status();
  EXPECT_EQ((*automatic)->dtype, "f32");
}

// A bf16 backbone holds bf16 matrices (half the bytes) and f32 norms, and scores text like the f32
// backbone within bf16 precision: on the CPU (the reference path) and, when present, on a GPU.
class Bf16Backbone : public ::testing::TestWithParam<std::string> {};

TEST_P(Bf16Backbone, ScoresLikeF32) {
  if (GetParam() == "cuda") {
    if (absl::StatusOr<std::unique_ptr<Backend>> probe = MakeCudaBackend(); !probe.ok()) {
      GTEST_SKIP() << "no CUDA device: " << probe.status();
    }
  }
  absl::StatusOr<std::shared_ptr<const SharedBackbone>> b16 = LoadSharedBackbone("random:tiny", GetParam(), "bf16");
  ASSERT_TRUE(b16.ok()) << b16.status();
  EXPECT_EQ((*b16)->dtype, "bf16");
  EXPECT_EQ((*b16)->weights.matrix_dtype(), DType::kBF16);
  EXPECT_EQ((*b16)->weights.layers[0].input_norm.dtype(), DType::kF32);
  absl::StatusOr<std::unique_ptr<LoadedModel>> m16 = ModelOn(*b16);
  absl::StatusOr<std::unique_ptr<LoadedModel>> m32 = LoadModel("random:tiny", "cpu");
  ASSERT_TRUE(m16.ok() && m32.ok());
  EXPECT_EQ((*b16)->weights.layers[1].experts[0].up.nbytes() * 2, (*m32)->model->weights().layers[1].experts[0].up.nbytes());
  const std::vector<int32_t> tokens = {257, 72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 33};
  auto mean_logprob = [&](const LoadedModel& m) {
    absl::StatusOr<std::vector<std::vector<float>>> lp = m.model->ScoreTokens({SequenceInput{tokens, nullptr, nullptr}});
    EXPECT_TRUE(lp.ok()) << lp.status();
    double sum = 0;
    for (float x : (*lp)[0]) sum += x;
    return sum / static_cast<double>((*lp)[0].size());
  };
  const double want = mean_logprob(**m32), got = mean_logprob(**m16);
  EXPECT_TRUE(std::isfinite(got));
  EXPECT_NE(got, want);  // it really ran in bf16
  EXPECT_NEAR(got, want, 0.02 * std::fabs(want)) << "bf16 " << got << " vs f32 " << want;
}

INSTANTIATE_TEST_SUITE_P(Devices, Bf16Backbone, ::testing::Values("cpu", "cuda"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

}  // namespace
}  // namespace tessera::services
