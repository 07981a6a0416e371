// services/model_host: the backbone is loaded once and shared. Models made over one SharedBackbone read
// the very same weight memory (no copy per job) on backends of their own, compute the same logits as a
// model that loaded the backbone itself, and keep the weights alive after the backbone handle is gone.
#include "services/model_host.h"

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

}  // namespace
}  // namespace tessera::services
