// core/model: config parsing, weights I/O, forward vs a double-precision reference (each family,
// overlays), KV-cache decode vs recompute, mixed-overlay batches, the grouped-GEMM group plan, and
// overlay serialization/validation.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <set>

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "core/io/safetensors.h"
#include "core/model/config.h"
#include "core/model/hf_names.h"
#include "core/model/kv_cache.h"
#include "core/model/model.h"
#include "core/model/overlay.h"
#include "gtest/gtest.h"
#include "tests/core/model/random_overlay.h"
#include "nlohmann/json.hpp"
#include "tests/core/model/reference_model.h"

namespace tessera {
namespace {

using testing::RefForward;
using testing::RefOverlay;
using testing::SmallConfig;

// ---------------------------------------------------------------------------------------------------
// Config

std::string Qwen3Json() {
  return R"({"model_type":"qwen3_moe","hidden_size":64,"num_hidden_layers":3,"num_attention_heads":4,
    "num_key_value_heads":2,"head_dim":24,"num_experts":8,"num_experts_per_tok":2,
    "moe_intermediate_size":32,"intermediate_size":256,"norm_topk_prob":true,"rms_norm_eps":1e-5,
    "rope_theta":1000000.0,"vocab_size":100,"tie_word_embeddings":false,"decoder_sparse_step":1,
    "mlp_only_layers":[],"use_sliding_window":false,"sliding_window":null,"rope_scaling":null,
    "attention_bias":false,"hidden_act":"silu","max_position_embeddings":512})";
}

TEST(ConfigTest, ParsesQwen3Moe) {
  auto c = ModelConfig::FromJson(Qwen3Json());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kQwen3Moe);
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->num_layers, 3);
  EXPECT_EQ(c->num_heads, 4);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 24);
  EXPECT_EQ(c->num_experts, 8);
  EXPECT_EQ(c->top_k, 2);
  EXPECT_EQ(c->expert_dim, 32);
  EXPECT_TRUE(c->norm_topk_prob);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c->rope_theta, 1e6f);
  EXPECT_EQ(c->vocab_size, 100);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->qk_norm, QkNorm::kPerHead);
  EXPECT_EQ(c->max_position_embeddings, 512);
}

TEST(ConfigTest, ExpertCountUnderEitherTransformersName) {
  // transformers maps num_experts and num_local_experts onto one attribute; 5.17's save_pretrained
  // wrote a Qwen3-MoE config with num_local_experts only.
  nlohmann::json j = nlohmann::json::parse(Qwen3Json());
  j.erase("num_experts");
  j["num_local_experts"] = 8;
  auto c = ModelConfig::FromJson(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_experts, 8);
  j["num_experts"] = 8;  // both, agreeing
  ASSERT_TRUE(ModelConfig::FromJson(j.dump()).ok());
  j["num_experts"] = 6;  // both, disagreeing
  auto bad = ModelConfig::FromJson(j.dump());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.status().message()).find("disagree"), std::string::npos) << bad.status();
}

TEST(ConfigTest, ParsesMixtralAndDefaultsHeadDim) {
  auto c = ModelConfig::FromJson(R"({"model_type":"mixtral","hidden_size":64,"num_hidden_layers":2,
    "num_attention_heads":8,"num_key_value_heads":2,"num_local_experts":4,"num_experts_per_tok":2,
    "intermediate_size":96,"rms_norm_eps":1e-5,"rope_theta":10000,"vocab_size":50,
    "tie_word_embeddings":true,"sliding_window":null})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kMixtral);
  EXPECT_EQ(c->head_dim, 8);  // hidden / heads when absent
  EXPECT_EQ(c->num_experts, 4);
  EXPECT_EQ(c->expert_dim, 96);
  EXPECT_TRUE(c->norm_topk_prob);  // Mixtral always renormalizes
  EXPECT_EQ(c->qk_norm, QkNorm::kNone);
  EXPECT_TRUE(c->tie_word_embeddings);
}

TEST(ConfigTest, ParsesOlmoe) {
  auto c = ModelConfig::FromJson(R"({"model_type":"olmoe","hidden_size":64,"num_hidden_layers":2,
    "num_attention_heads":4,"num_key_value_heads":4,"num_experts":8,"num_experts_per_tok":3,
    "intermediate_size":40,"rms_norm_eps":1e-5,"rope_theta":10000,"vocab_size":50,"clip_qkv":null})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kOlmoe);
  EXPECT_EQ(c->qk_norm, QkNorm::kFull);
  EXPECT_FALSE(c->norm_topk_prob);  // HF default for OLMoE
  EXPECT_EQ(c->expert_dim, 40);
  EXPECT_EQ(c->top_k, 3);
}

TEST(ConfigTest, ToJsonRoundTrips) {
  for (ModelFamily f : {ModelFamily::kMixtral, ModelFamily::kQwen3Moe, ModelFamily::kOlmoe, ModelFamily::kQwen2Moe,
                        ModelFamily::kGraniteMoe, ModelFamily::kDots1}) {
    ModelConfig c = SmallConfig(f);
    auto back = ModelConfig::FromJson(c.ToJson());
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, c) << ModelFamilyName(f);
  }
  auto tiny = ModelConfig::FromJson(ModelConfig::BuiltinTiny().ToJson());
  ASSERT_TRUE(tiny.ok());
  EXPECT_EQ(*tiny, ModelConfig::BuiltinTiny());
  EXPECT_GT(ModelConfig::BuiltinTiny().NumParameters(), 1'000'000);
  EXPECT_LT(ModelConfig::BuiltinTiny().NumParameters(), 10'000'000);
}

// Each case: (edit to the qwen3 config, expected code, field named in the message).
struct BadCase {
  std::string key;
  nlohmann::json value;  // null = remove the key
  absl::StatusCode code;
  std::string field;
};

TEST(ConfigTest, ErrorsNameTheField) {
  const std::vector<BadCase> cases = {
      {"hidden_size", nullptr, absl::StatusCode::kInvalidArgument, "hidden_size"},
      {"num_experts", nullptr, absl::StatusCode::kInvalidArgument, "num_experts"},
      {"moe_intermediate_size", nullptr, absl::StatusCode::kInvalidArgument, "moe_intermediate_size"},
      {"vocab_size", "many", absl::StatusCode::kInvalidArgument, "vocab_size"},
      {"num_key_value_heads", 3, absl::StatusCode::kInvalidArgument, "num_key_value_heads"},
      {"num_experts_per_tok", 9, absl::StatusCode::kInvalidArgument, "num_experts_per_tok"},
      {"head_dim", 7, absl::StatusCode::kInvalidArgument, "head_dim"},
      {"use_sliding_window", "yes", absl::StatusCode::kInvalidArgument, "use_sliding_window"},
      {"decoder_sparse_step", 2, absl::StatusCode::kUnimplemented, "decoder_sparse_step"},
      {"mlp_only_layers", nlohmann::json::array({0}), absl::StatusCode::kUnimplemented, "mlp_only_layers"},
      {"rope_scaling", nlohmann::json({{"rope_type", "dynamic"}, {"factor", 4.0}}),
       absl::StatusCode::kUnimplemented, "rope_scaling"},
      {"attention_bias", true, absl::StatusCode::kUnimplemented, "attention_bias"},
      {"hidden_act", "gelu", absl::StatusCode::kUnimplemented, "hidden_act"},
      {"model_type", "llama", absl::StatusCode::kUnimplemented, "model_type"},
      {"shared_expert_intermediate_size", 128, absl::StatusCode::kUnimplemented,
       "shared_expert_intermediate_size"},
  };
  for (const BadCase& bc : cases) {
    nlohmann::json j = nlohmann::json::parse(Qwen3Json());
    if (bc.value.is_null()) {
      j.erase(bc.key);
    } else {
      j[bc.key] = bc.value;
    }
    auto c = ModelConfig::FromJson(j.dump());
    ASSERT_FALSE(c.ok()) << bc.key;
    EXPECT_EQ(c.status().code(), bc.code) << bc.key << ": " << c.status();
    EXPECT_NE(std::string(c.status().message()).find(bc.field), std::string::npos) << c.status();
  }
  auto mix = ModelConfig::FromJson(R"({"model_type":"mixtral","hidden_size":64,"num_hidden_layers":2,
    "num_attention_heads":8,"num_local_experts":4,"num_experts_per_tok":2,"intermediate_size":96,
    "vocab_size":50,"sliding_window":0})");  // (a window of 0 keys: transformers' mask is empty)
  ASSERT_FALSE(mix.ok());
  EXPECT_NE(std::string(mix.status().message()).find("sliding_window"), std::string::npos);
  auto olmoe = ModelConfig::FromJson(R"({"model_type":"olmoe","hidden_size":64,"num_hidden_layers":2,
    "num_attention_heads":4,"num_experts":8,"num_experts_per_tok":3,"intermediate_size":40,
    "vocab_size":50,"clip_qkv":8.0})");
  ASSERT_FALSE(olmoe.ok());
  EXPECT_NE(std::string(olmoe.status().message()).find("clip_qkv"), std::string::npos);
  EXPECT_FALSE(ModelConfig::FromJson("not json").ok());
}

// ---------------------------------------------------------------------------------------------------
// Fixture: a backend and a randomized small model.

class ModelFixture : public ::testing::TestWithParam<ModelFamily> {
 protected:
  void Build(ModelFamily family, uint32_t seed = 7) {
    config_ = SmallConfig(family);
    auto w = ModelWeights::Allocate(config_, be_.get());
    ASSERT_TRUE(w.ok()) << w.status();
    testing::RandomizeWeights(config_, *w, be_.get(), seed);
    ref_weights_ = testing::HostWeights(config_, *w, be_.get());
    auto m = Model::Create(config_, *w, be_.get());
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
  }

  // An overlay on `slots` whose weights are fresh random values.
  std::shared_ptr<const ExpertOverlay> RandomOverlay(std::vector<SlotId> slots, uint32_t seed) {
    auto o = tessera::RandomOverlay(config_, be_.get(), slots, seed);
    EXPECT_TRUE(o.ok()) << o.status();
    return *o;
  }

  std::vector<float> Logits(const ForwardResult& r) { return be_->ToHostF32(r.logits).value(); }

  std::unique_ptr<Backend> be_ = MakeCpuBackend();
  ModelConfig config_;
  testing::RefWeights ref_weights_;
  std::unique_ptr<Model> model_;
};

// Tolerance vs the double reference: |got - ref| <= 1e-4 * max(1, max|ref|) (float32 forward).
void ExpectClose(const std::vector<float>& got, const std::vector<double>& ref, const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  double mx = 1.0;
  for (double r : ref) mx = std::max(mx, std::abs(r));
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], ref[i], 1e-4 * mx) << what << " at " << i;
  }
}

TEST_P(ModelFixture, ForwardMatchesReference) {
  Build(GetParam());
  auto overlay = RandomOverlay({{0, 1}, {1, 3}, {1, 0}}, 11);
  RefOverlay ref_ov = testing::HostOverlay(*overlay, be_.get());
  std::vector<int32_t> a = testing::RandomTokens(9, config_.vocab_size, 1);
  std::vector<int32_t> b = testing::RandomTokens(5, config_.vocab_size, 2);
  SequenceInput batch[2] = {{a, nullptr, nullptr}, {b, overlay.get(), nullptr}};
  ForwardOptions opt;
  opt.logits = LogitsMode::kAll;
  auto r = model_->Forward(batch, opt);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->logits.dim(0), 14);
  std::vector<float> got = Logits(*r);
  auto ra = RefForward(config_, ref_weights_, a);
  auto rb = RefForward(config_, ref_weights_, b, &ref_ov);
  ExpectClose(std::vector<float>(got.begin(), got.begin() + 9 * config_.vocab_size), ra.logits, "seq a");
  ExpectClose(std::vector<float>(got.begin() + 9 * config_.vocab_size, got.end()), rb.logits, "seq b");

  // kLast gives each sequence's last row.
  opt.logits = LogitsMode::kLast;
  auto last = model_->Forward(batch, opt);
  ASSERT_TRUE(last.ok());
  std::vector<float> lg = Logits(*last);
  const int64_t v = config_.vocab_size;
  for (int64_t i = 0; i < v; ++i) {
    EXPECT_NEAR(lg[i], got[8 * v + i], 1e-5);
    EXPECT_NEAR(lg[v + i], got[13 * v + i], 1e-5);
  }
}

TEST_P(ModelFixture, OverlayChangesOnlyItsTokens) {
  Build(GetParam());
  // An overlay holding every slot of layer 1 changes the output; one holding nothing used does not.
  std::vector<SlotId> all_l1;
  for (int e = 0; e < config_.num_experts; ++e) all_l1.push_back({1, e});
  auto ov = RandomOverlay(all_l1, 5);
  std::vector<int32_t> a = testing::RandomTokens(6, config_.vocab_size, 3);
  SequenceInput base[1] = {{a, nullptr, nullptr}};
  SequenceInput with[1] = {{a, ov.get(), nullptr}};
  auto r0 = model_->Forward(base);
  auto r1 = model_->Forward(with);
  ASSERT_TRUE(r0.ok() && r1.ok());
  std::vector<float> l0 = Logits(*r0), l1 = Logits(*r1);
  double diff = 0;
  for (size_t i = 0; i < l0.size(); ++i) diff = std::max(diff, static_cast<double>(std::abs(l0[i] - l1[i])));
  EXPECT_GT(diff, 1e-3);
}

TEST_P(ModelFixture, KvCacheDecodeMatchesRecompute) {
  Build(GetParam());
  auto ov = RandomOverlay({{0, 2}, {1, 4}}, 9);
  const int64_t v = config_.vocab_size;
  // Three sequences of different lengths; sequence 1 uses an overlay.
  std::vector<std::vector<int32_t>> seqs = {testing::RandomTokens(12, v, 21), testing::RandomTokens(9, v, 22),
                                            testing::RandomTokens(7, v, 23)};
  std::vector<const ExpertOverlay*> ovs = {nullptr, ov.get(), nullptr};
  std::vector<std::unique_ptr<KvCache>> caches;
  for (int i = 0; i < 3; ++i) caches.push_back(KvCache::Create(config_, 16, be_.get()).value());
  // Step 0: prefill seq0 with 5 tokens and seq1 with 3; seq2 not started.
  // Then steps mixing prefill chunks and single-token decodes until every sequence is consumed.
  std::vector<int64_t> done(3, 0);
  const std::vector<std::vector<int64_t>> schedule = {{5, 3, 0}, {1, 1, 4}, {1, 5, 1}, {5, 0, 1}, {0, 0, 1}};
  for (const auto& step : schedule) {
    std::vector<SequenceInput> batch;
    std::vector<int> which;
    for (int s = 0; s < 3; ++s) {
      if (step[s] == 0) continue;
      batch.push_back({absl::MakeConstSpan(seqs[s]).subspan(done[s], step[s]), ovs[s], caches[s].get()});
      which.push_back(s);
    }
    auto r = model_->Forward(batch);
    ASSERT_TRUE(r.ok()) << r.status();
    std::vector<float> got = Logits(*r);
    for (size_t i = 0; i < which.size(); ++i) {
      const int s = which[i];
      done[s] += step[s];
      EXPECT_EQ(caches[s]->length(), done[s]);
      // Recompute the whole prefix standalone.
      std::vector<int32_t> prefix(seqs[s].begin(), seqs[s].begin() + done[s]);
      SequenceInput one[1] = {{prefix, ovs[s], nullptr}};
      auto full = model_->Forward(one);
      ASSERT_TRUE(full.ok());
      std::vector<float> want = Logits(*full);
      for (int64_t j = 0; j < v; ++j) {
        ASSERT_NEAR(got[i * v + j], want[j], 1e-5 * std::max(1.0f, std::abs(want[j])))
            << "seq " << s << " len " << done[s];
      }
    }
  }
  for (int s = 0; s < 3; ++s) EXPECT_EQ(done[s], static_cast<int64_t>(seqs[s].size()));
}

TEST_P(ModelFixture, MixedOverlayBatchEqualsSoloRunsAndGroupsMatchPlan) {
  Build(GetParam());
  auto ova = RandomOverlay({{0, 0}, {0, 1}, {0, 2}, {1, 1}, {1, 5}}, 31);
  auto ovb = RandomOverlay({{0, 1}, {1, 2}, {1, 3}, {1, 4}}, 32);
  const int64_t v = config_.vocab_size;
  std::vector<std::vector<int32_t>> seqs = {testing::RandomTokens(8, v, 41), testing::RandomTokens(6, v, 42),
                                            testing::RandomTokens(7, v, 43), testing::RandomTokens(5, v, 44)};
  std::vector<const ExpertOverlay*> ovs = {ova.get(), ovb.get(), nullptr, ova.get()};
  std::vector<SequenceInput> batch;
  for (int s = 0; s < 4; ++s) batch.push_back({seqs[s], ovs[s], nullptr});
  ForwardOptions opt;
  opt.logits = LogitsMode::kAll;
  opt.collect_routing = true;
  auto mixed = model_->Forward(batch, opt);
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  std::vector<float> got = Logits(*mixed);

  // Expected groups per layer from the reference's routing: distinct (expert, weight owner) pairs.
  std::vector<std::set<std::pair<int, const void*>>> expected(config_.num_layers);
  int64_t row = 0;
  for (int s = 0; s < 4; ++s) {
    SequenceInput one[1] = {{seqs[s], ovs[s], nullptr}};
    auto solo = model_->Forward(one, opt);
    ASSERT_TRUE(solo.ok());
    std::vector<float> want = Logits(*solo);
    for (size_t j = 0; j < want.size(); ++j) {
      ASSERT_NEAR(got[row * v + j], want[j], 1e-5 * std::max(1.0f, std::abs(want[j]))) << "seq " << s;
    }
    row += static_cast<int64_t>(seqs[s].size());
    // Routing statistics of a sequence do not depend on the batch.
    EXPECT_EQ(mixed->routing[s].tokens_routed, solo->routing[0].tokens_routed);
    EXPECT_EQ(mixed->routing[s].overlay_tokens, solo->routing[0].overlay_tokens);

    RefOverlay ro;
    if (ovs[s] != nullptr) ro = testing::HostOverlay(*ovs[s], be_.get());
    auto ref = RefForward(config_, ref_weights_, seqs[s], ovs[s] != nullptr ? &ro : nullptr);
    for (int64_t l = 0; l < config_.num_layers; ++l) {
      for (int e : ref.topk[l]) {
        const void* owner = (ovs[s] != nullptr && ovs[s]->Has({static_cast<int32_t>(l), e})) ? ovs[s] : nullptr;
        expected[l].insert({e, owner});
      }
    }
  }
  ASSERT_EQ(mixed->groups_per_layer.size(), static_cast<size_t>(config_.num_layers));
  int64_t overlay_groups_seen = 0;
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    EXPECT_EQ(mixed->groups_per_layer[l], static_cast<int64_t>(expected[l].size())) << "layer " << l;
    int64_t ov_groups = 0;
    for (const auto& [e, owner] : expected[l]) ov_groups += owner != nullptr;
    EXPECT_EQ(mixed->overlay_groups_per_layer[l], ov_groups);
    overlay_groups_seen += ov_groups;
  }
  EXPECT_GT(overlay_groups_seen, 0);  // the test exercises overlays at all
}

INSTANTIATE_TEST_SUITE_P(Families, ModelFixture,
                         ::testing::Values(ModelFamily::kQwen3Moe, ModelFamily::kOlmoe, ModelFamily::kMixtral),
                         [](const auto& info) { return std::string(ModelFamilyName(info.param)); });

// ---------------------------------------------------------------------------------------------------
// Routing statistics, caches, scoring

class QwenModel : public ModelFixture {
 protected:
  void SetUp() override { Build(ModelFamily::kQwen3Moe); }
};

TEST_F(QwenModel, RoutingStatsAreConsistent) {
  auto ov = RandomOverlay({{0, 3}, {1, 1}}, 3);
  std::vector<int32_t> a = testing::RandomTokens(10, config_.vocab_size, 5);
  SequenceInput batch[1] = {{a, ov.get(), nullptr}};
  ForwardOptions opt;
  opt.collect_routing = true;
  auto r = model_->Forward(batch, opt);
  ASSERT_TRUE(r.ok());
  const RoutingStats& rs = r->routing[0];
  EXPECT_EQ(rs.tokens, 10);
  RefOverlay ro = testing::HostOverlay(*ov, be_.get());
  auto ref = RefForward(config_, ref_weights_, a, &ro);
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    int64_t sum = 0;
    double wsum = 0;
    for (int64_t e = 0; e < config_.num_experts; ++e) {
      const int64_t routed = rs.tokens_routed[l * config_.num_experts + e];
      sum += routed;
      wsum += rs.gate_weight_sum[l * config_.num_experts + e];
      EXPECT_EQ(routed, std::count(ref.topk[l].begin(), ref.topk[l].end(), e));
      const bool has = ov->Has({static_cast<int32_t>(l), static_cast<int32_t>(e)});
      EXPECT_EQ(rs.overlay_tokens[l * config_.num_experts + e], has ? routed : 0);
    }
    EXPECT_EQ(sum, 10 * config_.top_k);
    EXPECT_NEAR(wsum, 10.0, 1e-4);  // normalized top-k: each token's weights sum to 1
    EXPECT_GT(rs.entropy_sum[l], 0.0);
    EXPECT_LT(rs.entropy_sum[l], 10 * std::log(static_cast<double>(config_.num_experts)) + 1e-6);
  }
}

TEST_F(QwenModel, KvCacheCapacityAndTruncate) {
  auto cache = KvCache::Create(config_, 8, be_.get()).value();
  std::vector<int32_t> a = testing::RandomTokens(6, config_.vocab_size, 5);
  SequenceInput s1[1] = {{a, nullptr, cache.get()}};
  ASSERT_TRUE(model_->Forward(s1).ok());
  EXPECT_EQ(cache->length(), 6);
  auto r = model_->Forward(s1);  // 6 more do not fit in 8
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(cache->length(), 6);  // untouched
  // Truncate to 3 then append the rest again: same logits as a fresh full prefill.
  ASSERT_TRUE(cache->Truncate(3).ok());
  EXPECT_FALSE(cache->Truncate(4).ok());
  SequenceInput s2[1] = {{absl::MakeConstSpan(a).subspan(3), nullptr, cache.get()}};
  auto again = model_->Forward(s2);
  ASSERT_TRUE(again.ok());
  SequenceInput full[1] = {{a, nullptr, nullptr}};
  auto want = model_->Forward(full);
  std::vector<float> g = Logits(*again), w = Logits(*want);
  for (size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], w[i], 1e-5);
  // The same cache twice in one batch is rejected.
  cache->Reset();
  SequenceInput twice[2] = {{a, nullptr, cache.get()}, {a, nullptr, cache.get()}};
  EXPECT_EQ(model_->Forward(twice).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(QwenModel, RejectsBadInputs) {
  std::vector<int32_t> bad = {1, 2, static_cast<int32_t>(config_.vocab_size)};
  SequenceInput b1[1] = {{bad, nullptr, nullptr}};
  EXPECT_EQ(model_->Forward(b1).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> empty;
  SequenceInput b2[1] = {{empty, nullptr, nullptr}};
  EXPECT_EQ(model_->Forward(b2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(model_->Forward({}).ok());
}

TEST_F(QwenModel, ScoreTokensIsLogSoftmaxOfReference) {
  std::vector<int32_t> a = testing::RandomTokens(7, config_.vocab_size, 8);
  SequenceInput batch[1] = {{a, nullptr, nullptr}};
  auto s = model_->ScoreTokens(batch);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ((*s)[0].size(), 6u);
  auto ref = RefForward(config_, ref_weights_, a);
  const int64_t v = config_.vocab_size;
  for (int i = 0; i < 6; ++i) {
    double mx = -1e300, z = 0;
    for (int64_t j = 0; j < v; ++j) mx = std::max(mx, ref.logits[i * v + j]);
    for (int64_t j = 0; j < v; ++j) z += std::exp(ref.logits[i * v + j] - mx);
    const double lp = ref.logits[i * v + a[i + 1]] - mx - std::log(z);
    EXPECT_NEAR((*s)[0][i], lp, 1e-4 * std::max(1.0, std::abs(lp)));
  }
}

// ---------------------------------------------------------------------------------------------------
// Weights and overlays I/O

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  std::string base = dir != nullptr ? dir : std::filesystem::temp_directory_path().string();
  return base + "/tessera_model_test_" + std::to_string(::getpid()) + "_" + name;
}

TEST_F(QwenModel, WeightsSaveLoadRoundTrip) {
  ModelWeights w = model_->weights();
  const std::string path = TempPath("model.safetensors");
  ASSERT_TRUE(w.Save(config_, be_.get(), path).ok());
  auto back = ModelWeights::LoadFromPath(config_, path, be_.get());
  ASSERT_TRUE(back.ok()) << back.status();
  auto pa = w.Parameters(config_);
  auto pb = back->Parameters(config_);
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(be_->ToHostF32(*pa[i].tensor).value(), be_->ToHostF32(*pb[i].tensor).value()) << pa[i].name;
  }
  // A config whose expert width differs names the mismatching tensor.
  ModelConfig other = config_;
  other.expert_dim = 8;
  auto mismatch = ModelWeights::LoadFromPath(other, path, be_.get());
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(std::string(mismatch.status().message()).find("experts.0.gate_proj"), std::string::npos)
      << mismatch.status();
  // A config with more layers names the missing tensor.
  other = config_;
  other.num_layers = 3;
  auto missing = ModelWeights::LoadFromPath(other, path, be_.get());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(missing.status().message()).find("model.layers.2."), std::string::npos);
  std::filesystem::remove(path);
}

TEST_F(QwenModel, RandomInitIsDeterministic) {
  auto a = ModelWeights::RandomInit(config_, 42, be_.get()).value();
  auto b = ModelWeights::RandomInit(config_, 42, be_.get()).value();
  auto c = ModelWeights::RandomInit(config_, 43, be_.get()).value();
  EXPECT_EQ(be_->ToHostF32(a.layers[1].experts[2].down).value(), be_->ToHostF32(b.layers[1].experts[2].down).value());
  EXPECT_NE(be_->ToHostF32(a.layers[1].experts[2].down).value(), be_->ToHostF32(c.layers[1].experts[2].down).value());
}

TEST_F(QwenModel, OverlaySerializeRoundTrip) {
  auto ov = RandomOverlay({{0, 1}, {1, 5}}, 77);
  EXPECT_EQ(ov->bytes(), 2 * config_.ExpertParameters() * 4);
  auto blob = ov->Serialize({{"tenant", "acme"}});
  ASSERT_TRUE(blob.ok()) << blob.status();
  auto file = io::SafetensorsFile::FromBytes(*blob).value();
  EXPECT_EQ(file->size(), 6u);
  EXPECT_NE(file->Find("model.layers.1.mlp.experts.5.down_proj.weight"), nullptr);
  EXPECT_EQ(file->metadata().at("tenant"), "acme");
  auto back = ExpertOverlay::FromSafetensors(config_, *blob, be_.get());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ((*back)->SlotIds(), ov->SlotIds());
  EXPECT_EQ((*back)->digest(), ov->digest());
  auto other = RandomOverlay({{0, 1}, {1, 5}}, 78);
  EXPECT_NE(other->digest(), ov->digest());
  for (const auto& [slot, w] : ov->slots()) {
    const ExpertWeights* b = (*back)->Find(slot);
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(be_->ToHostF32(w.down).value(), be_->ToHostF32(b->down).value());
  }
  // Same outputs through the round-tripped overlay.
  std::vector<int32_t> a = testing::RandomTokens(6, config_.vocab_size, 5);
  SequenceInput s1[1] = {{a, ov.get(), nullptr}};
  SequenceInput s2[1] = {{a, back->get(), nullptr}};
  EXPECT_EQ(Logits(*model_->Forward(s1)), Logits(*model_->Forward(s2)));
  // A caller-provided digest is kept.
  auto named = ExpertOverlay::FromSafetensors(config_, *blob, be_.get(), "sha256:abc");
  ASSERT_TRUE(named.ok());
  EXPECT_EQ((*named)->digest(), "sha256:abc");
}

TEST_F(QwenModel, MergedCheckpointEqualsOverlayRun) {
  auto ov = RandomOverlay({{0, 4}, {1, 1}}, 12);
  auto merged = model_->weights().MergedWith(config_, *ov);
  ASSERT_TRUE(merged.ok()) << merged.status();
  const std::string path = TempPath("merged.safetensors");
  ASSERT_TRUE(merged->Save(config_, be_.get(), path).ok());
  auto loaded = ModelWeights::LoadFromPath(config_, path, be_.get());
  ASSERT_TRUE(loaded.ok());
  auto merged_model = Model::Create(config_, *loaded, be_.get()).value();
  std::vector<int32_t> a = testing::RandomTokens(7, config_.vocab_size, 4);
  SequenceInput with_overlay[1] = {{a, ov.get(), nullptr}};
  SequenceInput plain[1] = {{a, nullptr, nullptr}};
  EXPECT_EQ(Logits(*model_->Forward(with_overlay)), Logits(*merged_model->Forward(plain)));
  std::filesystem::remove(path);
}

TEST_F(QwenModel, CopyOfBaseEqualsBase) {
  auto ov = ExpertOverlay::CopyOfBase(config_, model_->weights(), std::vector<SlotId>{{1, 2}}, be_.get());
  ASSERT_TRUE(ov.ok()) << ov.status();
  std::vector<int32_t> a = testing::RandomTokens(6, config_.vocab_size, 5);
  SequenceInput s1[1] = {{a, nullptr, nullptr}};
  SequenceInput s2[1] = {{a, ov->get(), nullptr}};
  EXPECT_EQ(Logits(*model_->Forward(s1)), Logits(*model_->Forward(s2)));
  EXPECT_FALSE(ExpertOverlay::CopyOfBase(config_, model_->weights(), std::vector<SlotId>{{2, 0}}, be_.get()).ok());
}

TEST_F(QwenModel, BadOverlaysAreRejected) {
  const std::vector<int64_t> gshape = ExpertPartShape(config_, 0), dshape = ExpertPartShape(config_, 2);
  std::vector<float> g(gshape[0] * gshape[1], 0.5f), dn(dshape[0] * dshape[1], 0.5f);
  auto slot_tensors = [&](int layer, int expert) {
    return std::vector<io::HostTensor>{
        {hf::ExpertName(config_.family, layer, expert, hf::ExpertPart::kGate), DType::kF32, gshape, g.data()},
        {hf::ExpertName(config_.family, layer, expert, hf::ExpertPart::kUp), DType::kF32, gshape, g.data()},
        {hf::ExpertName(config_.family, layer, expert, hf::ExpertPart::kDown), DType::kF32, dshape, dn.data()}};
  };
  auto expect_error = [&](std::vector<io::HostTensor> tensors, const std::string& needle) {
    auto blob = io::SerializeSafetensors(tensors);
    ASSERT_TRUE(blob.ok());
    auto o = ExpertOverlay::FromSafetensors(config_, *blob, be_.get());
    ASSERT_FALSE(o.ok()) << needle;
    EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument) << o.status();
    EXPECT_NE(std::string(o.status().message()).find(needle), std::string::npos) << o.status();
  };
  ASSERT_TRUE(ExpertOverlay::FromSafetensors(config_, io::SerializeSafetensors(slot_tensors(1, 5)).value(),
                                             be_.get()).ok());
  expect_error(slot_tensors(2, 0), "model.layers.2.mlp.experts.0");          // layer out of range
  expect_error(slot_tensors(0, 6), "model.layers.0.mlp.experts.6");          // expert out of range
  auto partial = slot_tensors(0, 1);
  partial.pop_back();
  expect_error(partial, "down_proj");                                         // missing part
  auto wrong_shape = slot_tensors(0, 1);
  wrong_shape[2].shape = gshape;
  wrong_shape[2].data = g.data();
  expect_error(wrong_shape, "down_proj");                                     // shape mismatch
  auto foreign = slot_tensors(0, 1);
  std::vector<float> emb(config_.vocab_size * config_.hidden_size, 0.f);
  foreign.push_back({"model.embed_tokens.weight", DType::kF32, {config_.vocab_size, config_.hidden_size}, emb.data()});
  expect_error(foreign, "model.embed_tokens.weight");                         // not an expert tensor
  auto mixtral_names = slot_tensors(0, 1);
  mixtral_names[0].name = "model.layers.0.block_sparse_moe.experts.1.w1.weight";
  expect_error(mixtral_names, "block_sparse_moe");                            // other family's names
  EXPECT_FALSE(ExpertOverlay::FromSafetensors(config_, "garbage", be_.get()).ok());
  EXPECT_FALSE(ExpertOverlay::FromSafetensors(config_, io::SerializeSafetensors({}).value(), be_.get()).ok());
}


// ---------------------------------------------------------------------------------------------------
// bf16 weight matrices (served by the CUDA backend; here: conversion, identity and the CPU's refusal)

TEST_F(QwenModel, WithMatrixDtypeConvertsMatricesAndSharesNorms) {
  auto bf = model_->weights().WithMatrixDtype(config_, DType::kBF16, be_.get());
  ASSERT_TRUE(bf.ok()) << bf.status();
  EXPECT_EQ(bf->matrix_dtype(), DType::kBF16);
  EXPECT_TRUE(bf->CheckShapes(config_, DeviceKind::kCpu, DType::kBF16).ok());
  EXPECT_FALSE(bf->CheckShapes(config_, DeviceKind::kCpu, DType::kF32).ok());
  const LayerWeights& l0 = bf->layers[0];
  EXPECT_EQ(l0.q_proj.dtype(), DType::kBF16);
  EXPECT_EQ(l0.router.dtype(), DType::kBF16);
  EXPECT_EQ(l0.experts[3].down.dtype(), DType::kBF16);
  EXPECT_EQ(l0.input_norm.dtype(), DType::kF32);
  EXPECT_EQ(l0.input_norm.raw(), model_->weights().layers[0].input_norm.raw());  // shared, not copied
  // Every matrix holds the f32 values rounded to bf16: within 2^-8 relative, and not all exact.
  std::vector<float> want = be_->ToHostF32(model_->weights().layers[1].experts[2].gate).value();
  std::vector<float> got = be_->ToHostF32(bf->layers[1].experts[2].gate).value();
  ASSERT_EQ(got.size(), want.size());
  int64_t changed = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_LE(std::fabs(got[i] - want[i]), std::fabs(want[i]) * (1.0 / 256) + 1e-30) << i;
    changed += got[i] != want[i];
  }
  EXPECT_GT(changed, 0);
  // Back to f32 keeps the rounded values; converting to f32 again shares every tensor.
  auto back = bf->WithMatrixDtype(config_, DType::kF32, be_.get());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(be_->ToHostF32(back->layers[1].experts[2].gate).value(), got);
  auto same = back->WithMatrixDtype(config_, DType::kF32, be_.get());
  EXPECT_EQ(same->layers[1].experts[2].gate.raw(), back->layers[1].experts[2].gate.raw());
  EXPECT_EQ(model_->weights().WithMatrixDtype(config_, DType::kI32, be_.get()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Bf16Weights, TiedEmbeddingStaysTied) {
  const ModelConfig c = SmallConfig(ModelFamily::kOlmoe);
  ASSERT_TRUE(c.tie_word_embeddings);
  auto be = MakeCpuBackend();
  auto w = ModelWeights::RandomInit(c, 3, be.get()).value().WithMatrixDtype(c, DType::kBF16, be.get());
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->lm_head.raw(), w->embed.raw());
  EXPECT_EQ(w->lm_head.dtype(), DType::kBF16);
}

TEST_F(QwenModel, ForeignDtypeOverlaysAreRefusedAndBf16OverlaysRoundTrip) {
  // A bf16 overlay in front of the f32 model is refused by name, not silently converted.
  auto ov = RandomOverlay({{0, 3}}, 3);
  auto ov16 = ExpertOverlay::FromSafetensors(config_, ov->Serialize().value(), be_.get(), "", DType::kBF16);
  ASSERT_TRUE(ov16.ok()) << ov16.status();
  EXPECT_EQ((*ov16)->dtype(), DType::kBF16);
  EXPECT_EQ((*ov16)->bytes() * 2, ov->bytes());
  std::vector<int32_t> a = testing::RandomTokens(4, config_.vocab_size, 5);
  SequenceInput batch[1] = {{a, ov16->get(), nullptr}};
  auto r = model_->Forward(batch);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(r.status().message()).find("bf16"), std::string::npos) << r.status();
  // Its serialized form is the bf16-rounded f32 values: reloading it as f32 and as bf16 agree.
  auto again = ExpertOverlay::FromSafetensors(config_, (*ov16)->Serialize().value(), be_.get());
  ASSERT_TRUE(again.ok());
  const SlotId s{0, 3};
  EXPECT_EQ(be_->ToHostF32((*again)->Find(s)->up).value(), be_->ToHostF32((*ov16)->Find(s)->up).value());
  EXPECT_EQ((*again)->digest(), (*ov16)->digest());
  // Mixed dtypes inside one overlay are refused.
  std::map<SlotId, ExpertWeights> mixed = {{s, *(*ov16)->Find(s)}};
  mixed[s].down = ov->Find(s)->down;
  EXPECT_EQ(ExpertOverlay::FromWeights(config_, mixed, be_.get()).status().code(), absl::StatusCode::kInvalidArgument);
  // A bf16 KV cache takes half the bytes.
  EXPECT_EQ(KvCache::Create(config_, 8, be_.get(), DType::kBF16).value()->bytes() * 2,
            KvCache::Create(config_, 8, be_.get()).value()->bytes());
  EXPECT_FALSE(KvCache::Create(config_, 8, be_.get(), DType::kI32).ok());
}

}  // namespace
}  // namespace tessera
