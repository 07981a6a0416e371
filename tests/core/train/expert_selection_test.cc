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

// Hand-built statistics over N = 10 tokens, top-2, 4 experts, 3 layers:
//   layer 0: renormalized gates.  tokens routed {8, 6, 4, 2}: token shares .4 .3 .2 .1;
//            gate sums {2, 4.5, 3, .5}: averages .2 .45 .3 .05 (the ranking differs from Token's);
//            mixed = (.3, .375, .25, .075).
//   layer 1: gates not renormalized (they sum to 2, not N): averages .1 .05 .05 0, gate shares
//            .5 .25 .25 0; tokens routed {5, 5, 5, 5}: token shares .25 each.
//   layer 2: dense (nothing routed).
RoutingStats HandBuiltStats() {
  RoutingStats s;
  s.Init(3, 4);
  s.tokens = 10;
  s.tokens_routed = {8, 6, 4, 2, 5, 5, 5, 5, 0, 0, 0, 0};
  s.gate_weight_sum = {2.0, 4.5, 3.0, 0.5, 1.0, 0.5, 0.5, 0.0, 0, 0, 0, 0};
  return s;
}

std::vector<SlotId> Select(RelevanceScore score, double p, int64_t max_experts = 0) {
  SelectionOptions o;
  o.score = score;
  o.threshold = p;
  o.max_experts = max_experts;
  auto sel = SelectFromRouting(HandBuiltStats(), o);
  EXPECT_TRUE(sel.ok()) << sel.status();
  return sel.ok() ? sel->slots : std::vector<SlotId>{};
}

TEST(ExpertSelectionTest, EsftGateScoreIsTheAverageGateWeight) {
  SelectionOptions o;
  o.score = RelevanceScore::kGate;
  o.threshold = DefaultThreshold(RelevanceScore::kGate);
  auto sel = SelectFromRouting(HandBuiltStats(), o);
  ASSERT_TRUE(sel.ok()) << sel.status();
  ASSERT_EQ(sel->scores.size(), 12u);
  const std::vector<double> want = {.2, .45, .3, .05, .1, .05, .05, 0, 0, 0, 0, 0};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(sel->scores[i].score, want[i], 1e-12) << i;
    EXPECT_NEAR(sel->scores[i].gate_average, want[i], 1e-12) << i;
  }
  // p = 0.1 (ESFT's): the top expert of each routed layer reaches it alone.
  EXPECT_EQ(sel->slots, (std::vector<SlotId>{{0, 1}, {1, 0}}));
  // p = 0.5: layer 0 needs .45 + .3; layer 1's averages sum to .2 < p, so every used expert is taken
  // (never the unused one).
  EXPECT_EQ(Select(RelevanceScore::kGate, 0.5), (std::vector<SlotId>{{0, 1}, {0, 2}, {1, 0}, {1, 1}, {1, 2}}));
  // The cap keeps the highest Gate scores overall: .45, .3, .1.
  EXPECT_EQ(Select(RelevanceScore::kGate, 0.5, 3), (std::vector<SlotId>{{0, 1}, {0, 2}, {1, 0}}));
}

TEST(ExpertSelectionTest, EsftTokenScoreIsTheRoutedShareOverTopK) {
  SelectionOptions o;
  o.score = RelevanceScore::kToken;
  o.threshold = DefaultThreshold(RelevanceScore::kToken);
  auto sel = SelectFromRouting(HandBuiltStats(), o);
  ASSERT_TRUE(sel.ok()) << sel.status();
  const std::vector<double> want = {.4, .3, .2, .1, .25, .25, .25, .25, 0, 0, 0, 0};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(sel->scores[i].score, want[i], 1e-12) << i;
  // p = 0.2: one expert per layer (layer 1's tie goes to the lower expert).
  EXPECT_EQ(sel->slots, (std::vector<SlotId>{{0, 0}, {1, 0}}));
  // p = 0.5: .4 + .3 in layer 0; .25 + .25 in layer 1.
  EXPECT_EQ(Select(RelevanceScore::kToken, 0.5), (std::vector<SlotId>{{0, 0}, {0, 1}, {1, 0}, {1, 1}}));
  // Token ranks layer 0 differently from Gate: expert 0 first, not expert 1.
  EXPECT_EQ(Select(RelevanceScore::kToken, 0.3), (std::vector<SlotId>{{0, 0}, {1, 0}, {1, 1}}));
  EXPECT_EQ(Select(RelevanceScore::kGate, 0.3), (std::vector<SlotId>{{0, 1}, {1, 0}, {1, 1}, {1, 2}}));
}

TEST(ExpertSelectionTest, MixedScoreAveragesTheNormalizedShares) {
  auto sel = SelectFromRouting(HandBuiltStats(), SelectionOptions());
  ASSERT_TRUE(sel.ok()) << sel.status();
  EXPECT_NEAR(sel->scores[0].score, 0.3, 1e-12);
  EXPECT_NEAR(sel->scores[1].score, .375, 1e-12);
  EXPECT_NEAR(sel->scores[4].gate_share, .5, 1e-12);  // normalized, unlike gate_average (.1)
  EXPECT_NEAR(sel->scores[4].score, .375, 1e-12);
  // p = 0.5 (default): layer 0 .375 + .3; layer 1 .375 + .25 (ties: lower expert first).
  EXPECT_EQ(sel->slots, (std::vector<SlotId>{{0, 0}, {0, 1}, {1, 0}, {1, 1}}));
}

TEST(ExpertSelectionTest, ScoreNamesAndBadStatistics) {
  for (RelevanceScore s : {RelevanceScore::kMixed, RelevanceScore::kGate, RelevanceScore::kToken}) {
    auto parsed = ParseRelevanceScore(RelevanceScoreName(s));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, s);
  }
  EXPECT_EQ(ParseRelevanceScore("Gate").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DefaultThreshold(RelevanceScore::kGate), 0.1);
  EXPECT_EQ(DefaultThreshold(RelevanceScore::kToken), 0.2);

  RoutingStats bad = HandBuiltStats();
  bad.tokens_routed.pop_back();
  EXPECT_EQ(SelectFromRouting(bad, SelectionOptions()).status().code(), absl::StatusCode::kInvalidArgument);
  bad = HandBuiltStats();
  bad.tokens = 0;
  EXPECT_EQ(SelectFromRouting(bad, SelectionOptions()).status().code(), absl::StatusCode::kInvalidArgument);
  SelectionOptions o;
  o.threshold = 0;
  EXPECT_EQ(SelectFromRouting(HandBuiltStats(), o).status().code(), absl::StatusCode::kInvalidArgument);
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
