#include "core/train/expert_selection.h"

#include "gtest/gtest.h"
#include "tests/core/train/test_models.h"

namespace tessera::train {
namespace {

using testing::KnownRoutingWeights;
using testing::SmallMoeConfig;

std::vector<data::TokenizedExample> ClassData(int cls, int n) {
  std::vector<data::TokenizedExample> out;
  for (int i = 0; i < n; ++i) {
    data::TokenizedExample e;
    for (int j = 0; j < 6; ++j) e.tokens.push_back(cls + 4 * ((i + j) % 8));  // token % 4 == cls
    e.loss_mask.assign(e.tokens.size(), 1);
    out.push_back(e);
  }
  return out;
}

TEST(ExpertSelectionTest, PicksTheSlotsTheRouterUsesForTheData) {
  auto be = MakeCpuBackend();
  ModelConfig c = SmallMoeConfig();
  auto model = Model::Create(c, KnownRoutingWeights(c, be.get()), be.get());
  ASSERT_TRUE(model.ok()) << model.status();
  auto data = ClassData(1, 10);  // class 1 -> experts 2 and 3

  SelectionOptions o;
  o.threshold = 0.9;
  auto sel = SelectExpertsAuto(**model, data, o);
  ASSERT_TRUE(sel.ok()) << sel.status();
  EXPECT_EQ(sel->tokens, 60);
  EXPECT_EQ(sel->slots, (std::vector<SlotId>{{0, 2}, {0, 3}, {1, 2}, {1, 3}}));
  // Scores: token share 0.5 each; the router input is rmsnorm(e_d) = 4 e_d, so the logits are 40 and
  // 36 and the renormalized gate shares are sigmoid(4) and 1 - sigmoid(4).
  const double g = 1.0 / (1.0 + std::exp(-4.0));
  EXPECT_NEAR(sel->scores[2].score, 0.5 * (0.5 + g), 1e-3);
  EXPECT_NEAR(sel->scores[3].score, 0.5 * (0.5 + 1 - g), 1e-3);
  EXPECT_EQ(sel->scores[0].score, 0.0);

  // A lower threshold takes only the top slot per layer.
  o.threshold = 0.5;
  sel = SelectExpertsAuto(**model, data, o);
  ASSERT_TRUE(sel.ok());
  EXPECT_EQ(sel->slots, (std::vector<SlotId>{{0, 2}, {1, 2}}));

  // The cap keeps the highest-scoring slots overall (ties: lower slot first).
  o.threshold = 0.9;
  o.max_experts = 3;
  sel = SelectExpertsAuto(**model, data, o);
  ASSERT_TRUE(sel.ok());
  EXPECT_EQ(sel->slots, (std::vector<SlotId>{{0, 2}, {0, 3}, {1, 2}}));

  // Other data, other slots; the token bound is honoured.
  o = SelectionOptions();
  o.threshold = 0.9;
  o.max_tokens = 20;
  sel = SelectExpertsAuto(**model, ClassData(3, 10), o);
  ASSERT_TRUE(sel.ok());
  EXPECT_EQ(sel->tokens, 20);
  EXPECT_EQ(sel->slots, (std::vector<SlotId>{{0, 6}, {0, 7}, {1, 6}, {1, 7}}));
}

TEST(ExpertSelectionTest, ExplicitListsAreValidated) {
  ModelConfig c = SmallMoeConfig();
  EXPECT_TRUE(ValidateExplicitSlots(c, std::vector<SlotId>{{0, 0}, {1, 7}}).ok());
  auto st = ValidateExplicitSlots(c, std::vector<SlotId>{{0, 8}});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateExplicitSlots(c, std::vector<SlotId>{{2, 0}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateExplicitSlots(c, std::vector<SlotId>{{0, -1}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateExplicitSlots(c, std::vector<SlotId>{{0, 1}, {0, 1}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateExplicitSlots(c, {}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ExpertSelectionTest, RandomSlotsAreDistinctAndSeeded) {
  ModelConfig c = SmallMoeConfig();
  auto a = RandomSlots(c, 5, 1), b = RandomSlots(c, 5, 1), d = RandomSlots(c, 5, 2);
  EXPECT_EQ(a.size(), 5u);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, d);
  EXPECT_TRUE(ValidateExplicitSlots(c, a).ok());
  EXPECT_EQ(RandomSlots(c, 100, 1).size(), 16u);
}

}  // namespace
}  // namespace tessera::train
