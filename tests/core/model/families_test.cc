// The family table (core/model/families): every ModelFamily has a descriptor whose model_type parses
// back to it; each new family's config.json fields map onto ModelConfig's features; fields that change
// the math and are not supported are refused by name (UNIMPLEMENTED); fused expert checkpoints
// (granitemoe) load into per-expert tensors and save back fused.
#include <cmath>
#include <functional>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/io/checkpoint.h"
#include "core/model/config.h"
#include "core/model/hf_names.h"
#include "core/model/host_router.h"
#include "core/model/mla_attention.h"
#include "core/model/model.h"
#include "core/model/weights.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/core/model/reference_model.h"

namespace tessera {
namespace {

std::filesystem::path FixtureDir(const std::string& name) {
  const char* src = std::getenv("TESSERA_SOURCE_DIR");
  return std::filesystem::path(src != nullptr ? src : ".") / "tests" / "fixtures" / "hf" / name;
}

nlohmann::json FixtureConfig(const std::string& name) {
  auto c = ModelConfig::FromFile(FixtureDir(name).string());
  EXPECT_TRUE(c.ok()) << c.status();
  return nlohmann::json::parse(c->ToJson());
}

TEST(FamiliesTest, EveryFamilyRoundTripsItsModelType) {
  for (ModelFamily f : {ModelFamily::kMixtral, ModelFamily::kQwen3Moe, ModelFamily::kOlmoe, ModelFamily::kQwen2Moe,
                        ModelFamily::kGraniteMoe, ModelFamily::kDots1}) {
    const ModelConfig c = testing::SmallConfig(f);
    nlohmann::json j = nlohmann::json::parse(c.ToJson());
    EXPECT_EQ(j["model_type"], ModelFamilyName(f));
    auto back = ModelConfig::FromJson(j.dump());
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->family, f);
  }
}

TEST(FamiliesTest, Qwen2MoeFeatures) {
  auto c = ModelConfig::FromFile(FixtureDir("qwen2_moe_shared_dense_untied").string());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kQwen2Moe);
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_EQ(c->shared_expert_dim, 12);
  EXPECT_TRUE(c->shared_expert_gate);
  EXPECT_EQ(c->dense_layers, std::vector<int64_t>({1}));
  EXPECT_EQ(c->dense_dim, 20);
  EXPECT_EQ(c->MlpDim(1), 20);
  EXPECT_EQ(c->MlpDim(0), 12);
  auto step2 = ModelConfig::FromFile(FixtureDir("qwen2_moe_step2_norm_tied").string());
  ASSERT_TRUE(step2.ok()) << step2.status();
  EXPECT_EQ(step2->dense_layers, std::vector<int64_t>({0, 2}));  // (layer + 1) % 2 != 0
  EXPECT_TRUE(step2->norm_topk_prob);
  // A slot in a dense layer does not exist.
  EXPECT_FALSE(ValidateSlot(*step2, {0, 1}).ok());
  EXPECT_TRUE(ValidateSlot(*step2, {1, 1}).ok());
}

TEST(FamiliesTest, GraniteMoeFeatures) {
  auto c = ModelConfig::FromFile(FixtureDir("granitemoe_untied").string());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kGraniteMoe);
  EXPECT_FLOAT_EQ(c->embedding_multiplier, 2.5f);
  EXPECT_FLOAT_EQ(c->AttentionScale(), 0.2f);
  EXPECT_FLOAT_EQ(c->residual_multiplier, 0.6f);
  EXPECT_FLOAT_EQ(c->logits_scaling, 1.7f);
  EXPECT_TRUE(c->norm_topk_prob);  // softmax over the top-k logits
  EXPECT_EQ(hf::LayerTensorName(c->family, 1, hf::LayerTensor::kRouter), "model.layers.1.block_sparse_moe.router.layer.weight");
  auto slice = hf::FusedExpertSource(*c, 1, 3, hf::ExpertPart::kUp);
  ASSERT_TRUE(slice.has_value());
  EXPECT_EQ(slice->name, "model.layers.1.block_sparse_moe.input_linear.weight");
  EXPECT_EQ(slice->offset, (3 * 2 * c->expert_dim + c->expert_dim) * c->hidden_size);
}

// Regression (config_fuzz): with yarn rope scaling ToJson wrote the effective softmax scale (the
// multiplier times yarn's attention factor squared) as attention_multiplier, so every save/export
// shrank the scale again.
TEST(FamiliesTest, GraniteMoeYarnKeepsAttentionMultiplier) {
  nlohmann::json j = nlohmann::json::parse(std::ifstream(FixtureDir("granitemoe_untied") / "config.json"));
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 16}};
  auto c = ModelConfig::FromJson(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  // yarn's attention factor 0.1 ln 4 + 1 multiplies q and k, so the softmax scale by its square.
  EXPECT_NEAR(c->AttentionScale(), 0.2 * std::pow(0.1 * std::log(4.0) + 1.0, 2), 1e-6);
  nlohmann::json written = nlohmann::json::parse(c->ToJson());
  EXPECT_DOUBLE_EQ(written["attention_multiplier"].get<double>(), static_cast<double>(0.2f));
  auto back = ModelConfig::FromJson(written.dump());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, *c);
  EXPECT_FLOAT_EQ(back->AttentionScale(), c->AttentionScale());
}

// Regression (config_fuzz): a float field beyond float's range became inf and was written back as null.
TEST(FamiliesTest, FloatFieldsOutOfFloatRangeAreRefusedByName) {
  for (const char* field : {"rms_norm_eps", "rope_theta", "attention_multiplier", "embedding_multiplier"}) {
    nlohmann::json j = nlohmann::json::parse(std::ifstream(FixtureDir("granitemoe_untied") / "config.json"));
    j[field] = 1e308;
    auto c = ModelConfig::FromJson(j.dump());
    ASSERT_FALSE(c.ok()) << field;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
    EXPECT_NE(std::string(c.status().message()).find(field), std::string::npos) << c.status();
  }
}

TEST(FamiliesTest, Dots1Features) {
  auto c = ModelConfig::FromFile(FixtureDir("dots1_grouped_norm_untied").string());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kDots1);
  EXPECT_EQ(c->router_scoring, ModelConfig::RouterScoring::kSigmoid);
  EXPECT_TRUE(c->router_bias);
  EXPECT_EQ(c->n_group, 4);
  EXPECT_EQ(c->topk_group, 2);
  EXPECT_FLOAT_EQ(c->routed_scaling_factor, 2.5f);
  EXPECT_EQ(c->dense_layers, std::vector<int64_t>({0}));
  EXPECT_EQ(c->shared_expert_dim, c->expert_dim);  // n_shared_experts = 1
  EXPECT_FALSE(c->shared_expert_gate);
  EXPECT_EQ(hf::LayerTensorName(c->family, 1, hf::LayerTensor::kRouterBias),
            "model.layers.1.mlp.gate.e_score_correction_bias");
  EXPECT_EQ(hf::MlpName(c->family, 1, false, hf::ExpertPart::kUp), "model.layers.1.mlp.shared_experts.up_proj.weight");
}

// Sliding windows, per family, as transformers 5 decides them (the fixtures' parity is in parity_test.cc
// and backward_test.cc): which layers slide, with which window, the config.json round trip, and the
// configurations transformers cannot run (a sliding layer without a window) refused by name.
TEST(FamiliesTest, SlidingWindowLayers) {
  auto mixtral = ModelConfig::FromFile(FixtureDir("mixtral_sliding_window4").string());
  ASSERT_TRUE(mixtral.ok()) << mixtral.status();
  EXPECT_EQ(mixtral->sliding_window, 4);
  EXPECT_EQ(mixtral->sliding_layers, std::vector<int64_t>({0, 1}));
  EXPECT_EQ(mixtral->AttentionWindow(1), 4);
  auto qwen3 = ModelConfig::FromFile(FixtureDir("qwen3_moe_sliding_window5_tied").string());
  ASSERT_TRUE(qwen3.ok()) << qwen3.status();
  EXPECT_EQ(qwen3->sliding_window, 5);
  EXPECT_EQ(qwen3->sliding_layers, std::vector<int64_t>({0, 1}));
  auto qwen2 = ModelConfig::FromFile(FixtureDir("qwen2_moe_sliding_layers").string());
  ASSERT_TRUE(qwen2.ok()) << qwen2.status();
  EXPECT_EQ(qwen2->sliding_window, 4);
  EXPECT_EQ(qwen2->sliding_layers, std::vector<int64_t>({0}));  // layer_types as transformers wrote them
  EXPECT_EQ(qwen2->AttentionWindow(0), 4);
  EXPECT_EQ(qwen2->AttentionWindow(1), 0);
  EXPECT_EQ(qwen2->AttentionWindow(2), 0);
  for (const ModelConfig* c : {&*mixtral, &*qwen3, &*qwen2}) {
    auto back = ModelConfig::FromJson(c->ToJson());
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, *c) << ModelFamilyName(c->family);
  }

  auto parse = [](const std::string& fixture, const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = nlohmann::json::parse(std::ifstream(FixtureDir(fixture) / "config.json"));
    edit(j);
    return ModelConfig::FromJson(j.dump());
  };
  // qwen2_moe without layer_types: Qwen2MoeConfig's rule, layer i slides when i is even and
  // i < max_window_layers.
  auto rule = parse("qwen2_moe_sliding_layers", [](nlohmann::json& j) { j.erase("layer_types"); });
  ASSERT_TRUE(rule.ok()) << rule.status();
  EXPECT_EQ(rule->sliding_layers, std::vector<int64_t>({0}));  // max_window_layers 2
  rule = parse("qwen2_moe_sliding_layers", [](nlohmann::json& j) {
    j.erase("layer_types");
    j["max_window_layers"] = 28;
  });
  ASSERT_TRUE(rule.ok()) << rule.status();
  EXPECT_EQ(rule->sliding_layers, std::vector<int64_t>({0, 2}));
  rule = parse("qwen2_moe_sliding_layers", [](nlohmann::json& j) {
    j.erase("layer_types");
    j["use_sliding_window"] = false;
  });
  ASSERT_TRUE(rule.ok()) << rule.status();
  EXPECT_TRUE(rule->sliding_layers.empty());
  EXPECT_EQ(rule->sliding_window, 0);
  // qwen3_moe / mixtral: off when the flag is off or the window null.
  auto off = parse("qwen3_moe_sliding_window5_tied", [](nlohmann::json& j) { j["use_sliding_window"] = false; });
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_TRUE(off->sliding_layers.empty());
  off = parse("mixtral_sliding_window4", [](nlohmann::json& j) { j["sliding_window"] = nullptr; });
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_TRUE(off->sliding_layers.empty());
  // Sliding layers transformers cannot run: refused naming the field.
  struct Bad {
    std::string fixture, key;
    std::function<void(nlohmann::json&)> edit;
  };
  const std::vector<Bad> bad = {
      {"qwen2_moe_sliding_layers", "layer_types", [](nlohmann::json& j) { j["use_sliding_window"] = false; }},
      {"qwen2_moe_sliding_layers", "sliding_window", [](nlohmann::json& j) { j["sliding_window"] = nullptr; }},
      {"qwen2_moe_sliding_layers", "layer_types", [](nlohmann::json& j) { j["layer_types"] = {"full_attention"}; }},
      {"mixtral_sliding_window4", "sliding_window", [](nlohmann::json& j) { j["sliding_window"] = 0; }},
      {"qwen3_moe_sliding_window5_tied", "sliding_window", [](nlohmann::json& j) { j["sliding_window"] = -3; }},
  };
  for (const Bad& b : bad) {
    auto c = parse(b.fixture, b.edit);
    ASSERT_FALSE(c.ok()) << b.fixture << " " << b.key;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
    EXPECT_NE(std::string(c.status().message()).find(b.key), std::string::npos) << c.status();
  }
}

// The window changes the model: the fixture's logits past the window differ from full attention's by
// far more than the parity tolerance (so the parity tests would fail if the window were ignored).
TEST(FamiliesTest, SlidingWindowChangesTheLogits) {
  const std::filesystem::path dir = FixtureDir("mixtral_sliding_window4");
  auto config = ModelConfig::FromFile(dir.string()).value();
  auto backend = MakeCpuBackend();
  ModelConfig full = config;
  full.sliding_layers.clear();
  full.sliding_window = 0;
  const std::vector<int32_t> tokens = {5, 17, 3, 88, 41, 9, 60, 2, 33, 71};
  std::vector<std::vector<float>> last;
  for (const ModelConfig* c : {&config, &full}) {
    auto model = Model::Create(*c, ModelWeights::LoadFromPath(*c, dir.string(), backend.get()).value(), backend.get());
    ASSERT_TRUE(model.ok()) << model.status();
    SequenceInput batch[1] = {{tokens, nullptr, nullptr}};
    auto fwd = (*model)->Forward(batch);
    ASSERT_TRUE(fwd.ok()) << fwd.status();
    last.push_back(backend->ToHostF32(fwd->logits).value());
  }
  double diff = 0;
  for (size_t v = 0; v < last[0].size(); ++v) diff = std::max(diff, static_cast<double>(std::abs(last[0][v] - last[1][v])));
  EXPECT_GT(diff, 0.1);
}

// deepseek_v3: multi-head latent attention's fields, its config round trip (head_dim written as the rope
// width, as transformers does), what is refused by name, and the MLA layout helpers (mla_attention.h).
TEST(FamiliesTest, DeepseekV3MlaFeatures) {
  auto c = ModelConfig::FromFile(FixtureDir("deepseek_v3_qlora_grouped_untied").string());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, ModelFamily::kDeepseekV3);
  EXPECT_TRUE(c->mla());
  EXPECT_EQ(c->q_lora_rank, 12);
  EXPECT_EQ(c->kv_lora_rank, 10);
  EXPECT_EQ(c->head_dim, 10);  // nope 6 + rope 4
  EXPECT_EQ(c->num_kv_heads, c->num_heads);
  EXPECT_EQ(c->o_in_dim(), c->num_heads * 5);
  EXPECT_TRUE(c->rope_interleave);
  EXPECT_EQ(c->router_scoring, ModelConfig::RouterScoring::kSigmoid);
  EXPECT_EQ(c->dense_layers, std::vector<int64_t>({0}));
  EXPECT_EQ(hf::LayerTensorName(c->family, 1, hf::LayerTensor::kKvAProj),
            "model.layers.1.self_attn.kv_a_proj_with_mqa.weight");
  nlohmann::json j = nlohmann::json::parse(c->ToJson());
  EXPECT_EQ(j["head_dim"], 4);
  auto back = ModelConfig::FromJson(j.dump());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, *c);
  auto plain = ModelConfig::FromFile(FixtureDir("deepseek_v3_noqlora_tied").string());
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->q_lora_rank, 0);
  EXPECT_FALSE(plain->rope_interleave);

  // Every head dim is read once; nope pairs rotate with frequency 0, rope pairs keep their order.
  std::vector<int64_t> perm = MlaHeadPermutation(*c);  // nope 6, rope 4 interleaved: pairs (6,7), (8,9)
  EXPECT_EQ(perm, std::vector<int64_t>({0, 1, 2, 6, 8, 3, 4, 5, 7, 9}));
  std::vector<float> f = MlaInverseFrequencies(*c);
  ASSERT_EQ(f.size(), 5u);
  EXPECT_EQ(f[0] + f[1] + f[2], 0.0f);
  EXPECT_FLOAT_EQ(f[3], 1.0f);
  EXPECT_FLOAT_EQ(f[4], 0.01f);  // 10000^(-2/4)
  EXPECT_EQ(MlaHeadPermutation(*plain), std::vector<int64_t>({0, 1, 4, 5, 6, 2, 3, 7, 8, 9}));

  nlohmann::json bad = j;
  bad["topk_method"] = "greedy";
  auto r = ModelConfig::FromJson(bad.dump());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented) << r.status();
  EXPECT_NE(r.status().message().find("topk_method"), std::string::npos) << r.status();

  // yarn with mscale_all_dim: the softmax scale gains mscale(factor, mscale_all_dim)^2 (the attention
  // factor itself goes into the rope dims only, not into the scale).
  auto yarn = ModelConfig::FromFile(FixtureDir("deepseek_v3_rope_yarn").string());
  ASSERT_TRUE(yarn.ok()) << yarn.status();
  const double m = 0.1 * std::log(4.0) + 1.0;
  EXPECT_NEAR(yarn->AttentionScale(), m * m / std::sqrt(10.0), 1e-6);
  EXPECT_EQ(MlaInverseFrequencies(*yarn).size(), 5u);
}

// deepseek_v2: MLA with a softmax router, greedy or group-limited greedy (groups ranked by their best
// score, host_router.h), never renormalized; other topk_methods refused by name.
TEST(FamiliesTest, DeepseekV2RouterFeatures) {
  auto greedy = ModelConfig::FromFile(FixtureDir("deepseek_v2_greedy_tied").string());
  ASSERT_TRUE(greedy.ok()) << greedy.status();
  EXPECT_EQ(greedy->family, ModelFamily::kDeepseekV2);
  EXPECT_TRUE(greedy->mla());
  EXPECT_TRUE(greedy->rope_interleave);  // the complex rotary pairs (2i, 2i+1)
  EXPECT_EQ(greedy->router_scoring, ModelConfig::RouterScoring::kSoftmax);
  EXPECT_FALSE(greedy->router_bias);
  EXPECT_FALSE(greedy->norm_topk_prob);
  EXPECT_EQ(greedy->n_group, 1);
  EXPECT_FALSE(greedy->HostRouting());  // the backend's softmax top-k
  EXPECT_EQ(greedy->shared_expert_dim, 2 * greedy->expert_dim);
  auto grouped = ModelConfig::FromFile(FixtureDir("deepseek_v2_grouped_qlora_untied").string());
  ASSERT_TRUE(grouped.ok()) << grouped.status();
  EXPECT_EQ(grouped->n_group, 4);
  EXPECT_EQ(grouped->topk_group, 2);
  EXPECT_TRUE(grouped->HostRouting());
  EXPECT_FLOAT_EQ(grouped->routed_scaling_factor, 2.0f);
  EXPECT_EQ(grouped->dense_layers, std::vector<int64_t>({0}));
  for (const ModelConfig* c : {&*greedy, &*grouped}) {
    auto back = ModelConfig::FromJson(c->ToJson());
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, *c);
  }
  nlohmann::json bad = nlohmann::json::parse(grouped->ToJson());
  bad["topk_method"] = "noaux_tc";
  auto r = ModelConfig::FromJson(bad.dump());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(r.status().message().find("topk_method"), std::string::npos) << r.status();
}

// Full-parameter training of MLA weights is refused by name (expert slots train: GradParityTest).
TEST(FamiliesTest, DeepseekV3RefusesFullParameterTraining) {
  const std::string dir = FixtureDir("deepseek_v3_noqlora_tied").string();
  auto be = MakeCpuBackend();
  auto config = ModelConfig::FromFile(dir).value();
  auto model = Model::Create(config, ModelWeights::LoadFromPath(config, dir, be.get()).value(), be.get()).value();
  std::vector<int32_t> toks = {1, 2, 3, 4};
  std::vector<SequenceInput> in = {{toks, nullptr, nullptr}};
  auto fwd = model->Forward(in, {LogitsMode::kAll, false, true});
  ASSERT_TRUE(fwd.ok()) << fwd.status();
  auto g = Gradients::Create(config, TrainableSet::All(), be.get());
  ASSERT_TRUE(g.ok()) << g.status();
  auto loss = model->Backward(*fwd, {{2, 3, 4, -1}}, &*g);
  ASSERT_FALSE(loss.ok());
  EXPECT_EQ(loss.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(loss.status().message().find("multi-head latent attention"), std::string::npos) << loss.status();
}

// Host routing (host_router.h): group-limited selection by score + bias, weights from the scores.
TEST(FamiliesTest, HostRouterPicksWithinTheBestGroups) {
  ModelConfig c = testing::SmallConfig(ModelFamily::kDots1);  // 6 experts in 3 groups of 2, keep 2, top-2
  c.norm_topk_prob = true;
  // Expert 0 has the largest score, but its group (0, 1) sums lowest once expert 1 is weak.
  const std::vector<float> logits = {3.0f, -4.0f, 1.0f, 1.5f, 0.5f, 0.8f};
  HostRouting r = RouteOnHost(c, logits, {}, 1);
  EXPECT_EQ(r.idx, std::vector<int32_t>({3, 2}));
  const float s3 = 1.0f / (1.0f + std::exp(-1.5f)), s2 = 1.0f / (1.0f + std::exp(-1.0f));
  EXPECT_NEAR(r.w[0], s3 / (s3 + s2), 1e-6);
  // A bias moves the choice, not the weights' source: expert 5 chosen, weighted by its own score.
  HostRouting rb = RouteOnHost(c, logits, {0, 0, 0, 0, 0, 1.0f}, 1);
  EXPECT_EQ(rb.idx[0], 5);
  const float s5 = 1.0f / (1.0f + std::exp(-0.8f));
  EXPECT_NEAR(rb.w[0], s5 / (s5 + s3), 1e-6);
}

struct Refusal {
  std::string fixture;
  std::string key;
  nlohmann::json value;
};

TEST(FamiliesTest, UnsupportedFieldsAreRefusedByName) {
  const std::vector<Refusal> cases = {
      {"qwen2_moe_shared_dense_untied", "layer_types",
       nlohmann::json::array({"chunked_attention", "full_attention", "full_attention"})},
      {"qwen2_moe_shared_dense_untied", "rope_scaling", nlohmann::json({{"rope_type", "dynamic"}, {"factor", 2.0}})},
      {"qwen2_moe_shared_dense_untied", "hidden_act", "gelu"},
      {"granitemoe_untied", "attention_bias", true},
      {"granitemoe_untied", "rope_scaling", nlohmann::json({{"type", "longrope"}, {"factor", 2.0}})},
  };
  for (const Refusal& r : cases) {
    nlohmann::json j = nlohmann::json::parse(std::ifstream(FixtureDir(r.fixture) / "config.json"));
    j[r.key] = r.value;
    auto c = ModelConfig::FromJson(j.dump());
    ASSERT_FALSE(c.ok()) << r.fixture << " " << r.key;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kUnimplemented) << c.status();
    EXPECT_NE(std::string(c.status().message()).find(r.key), std::string::npos) << c.status();
  }
  auto unknown = ModelConfig::FromJson(R"({"model_type":"jamba"})");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(std::string(unknown.status().message()).find("granitemoe"), std::string::npos) << unknown.status();
}

// granitemoe: the checkpoint holds fused expert tensors; Load slices them per expert, Save writes them
// fused again (what transformers reads), and the saved checkpoint loads to the same model.
TEST(FamiliesTest, FusedExpertsLoadAndSaveFused) {
  const auto dir = FixtureDir("granitemoe_untied");
  auto be = MakeCpuBackend();
  auto c = ModelConfig::FromFile(dir.string()).value();
  auto w = ModelWeights::LoadFromPath(c, dir.string(), be.get());
  ASSERT_TRUE(w.ok()) << w.status();
  auto ckpt = io::Checkpoint::Open(dir.string()).value();
  const std::vector<float> fused = ckpt->ReadF32("model.layers.1.block_sparse_moe.input_linear.weight").value();
  const std::vector<float> up = be->ToHostF32(w->layers[1].experts[5].up).value();
  const int64_t f = c.expert_dim, d = c.hidden_size;
  for (int64_t i = 0; i < f * d; ++i) ASSERT_EQ(up[i], fused[(5 * 2 * f + f) * d + i]) << i;

  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(tmp != nullptr ? tmp : "/tmp") + "/granite_saved.safetensors";
  ASSERT_TRUE(w->Save(c, be.get(), path).ok());
  auto saved = io::Checkpoint::Open(path).value();
  EXPECT_NE(saved->Find("model.layers.0.block_sparse_moe.output_linear.weight"), nullptr);
  EXPECT_EQ(saved->Find(hf::ExpertName(c.family, 0, 0, hf::ExpertPart::kDown)), nullptr);
  EXPECT_EQ(saved->ReadF32("model.layers.1.block_sparse_moe.input_linear.weight").value(), fused);
  auto again = ModelWeights::LoadFromPath(c, path, be.get());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(be->ToHostF32(again->layers[0].experts[7].down).value(), be->ToHostF32(w->layers[0].experts[7].down).value());
  std::filesystem::remove(path);
}

// Backend::RopeFreqs (the rotation rope_scaling uses) with the default frequencies is the backend's
// Rope, and its inverse undoes it; bf16 storage goes through the same path.
TEST(FamiliesTest, RopeFreqsWithDefaultFrequenciesIsRope) {
  auto be = MakeCpuBackend();
  const int64_t n = 5, h = 3, hd = 8;
  std::vector<float> v(n * h * hd);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.37 * static_cast<double>(i)) * 2.0;
  std::vector<int32_t> pos = {0, 3, 7, 20, 41};
  Tensor p = be->FromHost(pos, {n}).value();
  Tensor a = be->FromHost(v, {n, h, hd}).value(), b = be->FromHost(v, {n, h, hd}).value();
  ASSERT_TRUE(be->Rope(a, p, 10000.0f, false).ok());
  const std::vector<float> inv = RopeInverseFrequencies(RopeScaling(), 10000.0, hd);
  ASSERT_TRUE(be->RopeFreqs(b, p, inv, false).ok());
  const std::vector<float> ra = be->ToHostF32(a).value(), rb = be->ToHostF32(b).value();
  for (size_t i = 0; i < v.size(); ++i) ASSERT_NEAR(ra[i], rb[i], 2e-6) << i;
  ASSERT_TRUE(be->RopeFreqs(b, p, inv, true).ok());
  const std::vector<float> back = be->ToHostF32(b).value();
  for (size_t i = 0; i < v.size(); ++i) ASSERT_NEAR(back[i], v[i], 2e-6) << i;
  EXPECT_FALSE(be->RopeFreqs(b, p, std::vector<float>(3, 1.0f), false).ok());  // head_dim / 2 values
  RopeScaling linear;
  linear.type = RopeScaling::Type::kLinear;
  linear.factor = 4.0;
  const std::vector<float> scaled = RopeInverseFrequencies(linear, 10000.0, hd);
  for (int64_t i = 0; i < hd / 2; ++i) EXPECT_FLOAT_EQ(scaled[i], inv[i] / 4.0f);
}

}  // namespace
}  // namespace tessera
