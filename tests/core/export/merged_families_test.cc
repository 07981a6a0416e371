// A merged export of every family's parity fixture (tests/fixtures/hf: real transformers checkpoints,
// granitemoe's experts stored fused), re-loaded by Tessera's own loader, computes bitwise the log-probs
// of the backbone with the overlay: the merge puts each slot exactly where loading takes it from.
#include <filesystem>

#include "core/backend/backend.h"
#include "core/export/checkpoint_export.h"
#include "core/model/hf_names.h"
#include "core/model/model.h"
#include "core/model/overlay.h"
#include "core/train/backbone.h"
#include "gtest/gtest.h"
#include "tests/core/io/test_util.h"

namespace tessera::exporting {
namespace {
namespace fs = std::filesystem;

fs::path FixturesDir() {
  const char* src = std::getenv("TESSERA_SOURCE_DIR");
  return fs::path(src != nullptr ? src : ".") / "tests" / "fixtures" / "hf";
}

std::vector<float> LogProbs(const Model& m, const ExpertOverlay* overlay, const std::vector<int32_t>& ids) {
  SequenceInput in{ids, overlay, nullptr};
  auto lp = m.ScoreTokens(absl::MakeConstSpan(&in, 1));
  EXPECT_TRUE(lp.ok()) << lp.status();
  return lp.ok() ? (*lp)[0] : std::vector<float>{};
}

TEST(MergedFamiliesTest, ReloadedExportComputesTheBackboneWithTheOverlay) {
  auto backend = MakeBackend("cpu");
  ASSERT_TRUE(backend.ok()) << backend.status();
  int checked = 0;
  bool fused_seen = false;
  for (const auto& entry : fs::directory_iterator(FixturesDir())) {
    if (!fs::exists(entry.path() / "config.json")) continue;
    SCOPED_TRACE(entry.path().filename().string());
    auto base = train::LoadBackbone(entry.path().string(), backend->get());
    ASSERT_TRUE(base.ok()) << base.status();
    const ModelConfig& config = base->config;
    // The first and the last sparse layer's first and last experts.
    std::vector<SlotId> slots;
    for (int64_t l = 0; l < config.num_layers; ++l) {
      if (config.IsDenseLayer(l)) continue;
      if (slots.empty()) slots.push_back({static_cast<int32_t>(l), 0});
      if (l == config.num_layers - 1 || slots.back().layer != l) {
        slots.push_back({static_cast<int32_t>(l), static_cast<int32_t>(config.num_experts - 1)});
      }
    }
    auto copy = ExpertOverlay::CopyOfBase(config, base->weights, slots, backend->get());
    ASSERT_TRUE(copy.ok()) << copy.status();
    std::map<SlotId, ExpertWeights> w = (*copy)->slots();
    for (auto& [slot, ew] : w) {
      for (Tensor* t : {&ew.gate, &ew.up, &ew.down}) {
        float* p = t->data<float>();
        for (int64_t i = 0; i < t->numel(); ++i) p[i] = p[i] * 1.75f + 0.01f * static_cast<float>(i % 5);
      }
    }
    auto overlay = ExpertOverlay::FromWeights(config, w, backend->get());
    ASSERT_TRUE(overlay.ok()) << overlay.status();
    const fs::path out = io::testing::ScratchDir() / entry.path().filename();
    fs::create_directories(out);
    CheckpointExportOptions o;
    o.backbone_dir = entry.path().string();
    o.config = config;
    auto written = WriteMergedCheckpoint(o, (*overlay)->Serialize().value(), out.string());
    ASSERT_TRUE(written.ok()) << written.status();
    fused_seen |= hf::FusedExpertSource(config, 0, 0, hf::ExpertPart::kGate).has_value();

    auto merged = train::LoadBackbone(out.string(), backend->get());
    ASSERT_TRUE(merged.ok()) << merged.status();
    EXPECT_EQ(merged->config, config);
    auto with_overlay = Model::Create(config, base->weights, backend->get());
    auto exported = Model::Create(config, merged->weights, backend->get());
    ASSERT_TRUE(with_overlay.ok() && exported.ok());
    std::vector<int32_t> ids;
    for (int i = 0; i < 24; ++i) ids.push_back(static_cast<int32_t>((i * 37 + 5) % config.vocab_size));
    const std::vector<float> want = LogProbs(**with_overlay, overlay->get(), ids);
    EXPECT_EQ(LogProbs(**exported, nullptr, ids), want);
    EXPECT_NE(LogProbs(**with_overlay, nullptr, ids), want);  // the overlay changes the output
    ++checked;
  }
  EXPECT_GE(checked, 10);
  EXPECT_TRUE(fused_seen);
}

}  // namespace
}  // namespace tessera::exporting
