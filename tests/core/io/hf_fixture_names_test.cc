// The committed HF fixtures (written by Python's safetensors) open with our reader, hold each family's
// canonical tensor names and shapes, and survive a rewrite by our writer bit for bit.
#include <cstdlib>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "core/io/checkpoint.h"
#include "core/io/file_util.h"
#include "core/io/safetensors.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tessera::io {
namespace {

namespace fs = std::filesystem;

fs::path FixtureRoot() {
  const char* src = std::getenv("TESSERA_SOURCE_DIR");
  return fs::path(src ? src : ".") / "tests" / "fixtures" / "hf";
}

std::vector<fs::path> FixtureDirs() {
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(FixtureRoot())) {
    if (e.is_directory()) dirs.push_back(e.path());
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

nlohmann::json ReadJson(const fs::path& p) {
  absl::StatusOr<std::string> text = ReadFileToString(p.string());
  EXPECT_TRUE(text.ok()) << text.status();
  return nlohmann::json::parse(text.ok() ? *text : "{}");
}

int64_t Width(const nlohmann::json& c) {
  const std::string family = c["model_type"];
  return family == "qwen3_moe" || family == "qwen2_moe" || family == "dots1" || family == "deepseek_v3" ||
                     family == "deepseek_v2"
             ? c["moe_intermediate_size"]
             : c["intermediate_size"];
}

// qwen2_moe's dense layers (Qwen2MoeDecoderLayer's rule).
bool DenseLayer(const nlohmann::json& c, int64_t i) {
  if (c["model_type"] == "dots1" || c["model_type"] == "deepseek_v3" || c["model_type"] == "deepseek_v2") {
    return i < c["first_k_dense_replace"].get<int64_t>();
  }
  if (c["model_type"] != "qwen2_moe") return false;
  for (const auto& l : c["mlp_only_layers"]) {
    if (l.get<int64_t>() == i) return true;
  }
  return (i + 1) % c["decoder_sparse_step"].get<int64_t>() != 0;
}

// Expected canonical names (and shapes) for one fixture, derived from its config.json.
std::map<std::string, std::vector<int64_t>> CanonicalNames(const nlohmann::json& c) {
  const std::string family = c["model_type"];
  const int64_t h = c["hidden_size"], layers = c["num_hidden_layers"], heads = c["num_attention_heads"];
  const int64_t kv = c["num_key_value_heads"], vocab = c["vocab_size"];
  const int64_t hd = c.contains("head_dim") ? c["head_dim"].get<int64_t>() : h / heads;
  // (transformers 5.25 writes qwen3_moe's expert count under its alias num_local_experts.)
  const int64_t experts = family == "mixtral" || family == "granitemoe" ? c["num_local_experts"]
                          : family == "dots1" || family == "deepseek_v3" || family == "deepseek_v2"
                              ? c["n_routed_experts"]
                          : c.contains("num_experts") ? c["num_experts"]
                                                      : c["num_local_experts"];
  const int64_t width = Width(c);
  std::map<std::string, std::vector<int64_t>> n;
  n["model.embed_tokens.weight"] = {vocab, h};
  n["model.norm.weight"] = {h};
  if (!c["tie_word_embeddings"].get<bool>()) n["lm_head.weight"] = {vocab, h};
  for (int64_t i = 0; i < layers; ++i) {
    const std::string l = absl::StrCat("model.layers.", i, ".");
    n[l + "input_layernorm.weight"] = {h};
    n[l + "post_attention_layernorm.weight"] = {h};
    const bool mla = family == "deepseek_v3" || family == "deepseek_v2";
    if (mla) {  // multi-head latent attention
      const int64_t nope = c["qk_nope_head_dim"], rope = c["qk_rope_head_dim"], v = c["v_head_dim"];
      const int64_t r = c["kv_lora_rank"];
      if (c["q_lora_rank"].is_null()) {
        n[l + "self_attn.q_proj.weight"] = {heads * (nope + rope), h};
      } else {
        const int64_t qr = c["q_lora_rank"];
        n[l + "self_attn.q_a_proj.weight"] = {qr, h};
        n[l + "self_attn.q_a_layernorm.weight"] = {qr};
        n[l + "self_attn.q_b_proj.weight"] = {heads * (nope + rope), qr};
      }
      n[l + "self_attn.kv_a_proj_with_mqa.weight"] = {r + rope, h};
      n[l + "self_attn.kv_a_layernorm.weight"] = {r};
      n[l + "self_attn.kv_b_proj.weight"] = {heads * (nope + v), r};
      n[l + "self_attn.o_proj.weight"] = {h, heads * v};
    } else {
      n[l + "self_attn.q_proj.weight"] = {heads * hd, h};
      n[l + "self_attn.k_proj.weight"] = {kv * hd, h};
      n[l + "self_attn.v_proj.weight"] = {kv * hd, h};
      n[l + "self_attn.o_proj.weight"] = {h, heads * hd};
    }
    if (family == "qwen3_moe" || family == "dots1") {
      n[l + "self_attn.q_norm.weight"] = {hd};
      n[l + "self_attn.k_norm.weight"] = {hd};
    } else if (family == "olmoe") {
      n[l + "self_attn.q_norm.weight"] = {heads * hd};
      n[l + "self_attn.k_norm.weight"] = {kv * hd};
    }
    if (family == "qwen2_moe") {
      n[l + "self_attn.q_proj.bias"] = {heads * hd};
      n[l + "self_attn.k_proj.bias"] = {kv * hd};
      n[l + "self_attn.v_proj.bias"] = {kv * hd};
      if (DenseLayer(c, i)) {
        const int64_t dense = c["intermediate_size"];
        n[l + "mlp.gate_proj.weight"] = {dense, h};
        n[l + "mlp.up_proj.weight"] = {dense, h};
        n[l + "mlp.down_proj.weight"] = {h, dense};
        continue;
      }
      const int64_t shared = c["shared_expert_intermediate_size"];
      n[l + "mlp.shared_expert.gate_proj.weight"] = {shared, h};
      n[l + "mlp.shared_expert.up_proj.weight"] = {shared, h};
      n[l + "mlp.shared_expert.down_proj.weight"] = {h, shared};
      n[l + "mlp.shared_expert_gate.weight"] = {1, h};
    }
    if (family == "dots1" || mla) {
      if (DenseLayer(c, i)) {
        const int64_t dense = c["intermediate_size"];
        n[l + "mlp.gate_proj.weight"] = {dense, h};
        n[l + "mlp.up_proj.weight"] = {dense, h};
        n[l + "mlp.down_proj.weight"] = {h, dense};
        continue;
      }
      const int64_t shared = c["n_shared_experts"].get<int64_t>() * width;
      n[l + "mlp.shared_experts.gate_proj.weight"] = {shared, h};
      n[l + "mlp.shared_experts.up_proj.weight"] = {shared, h};
      n[l + "mlp.shared_experts.down_proj.weight"] = {h, shared};
      if (family != "deepseek_v2") n[l + "mlp.gate.e_score_correction_bias"] = {experts};
    }
    if (family == "granitemoe") {  // fused experts
      n[l + "block_sparse_moe.router.layer.weight"] = {experts, h};
      n[l + "block_sparse_moe.input_linear.weight"] = {experts, 2 * width, h};
      n[l + "block_sparse_moe.output_linear.weight"] = {experts, h, width};
      continue;
    }
    const std::string moe = l + (family == "mixtral" ? "block_sparse_moe." : "mlp.");
    n[moe + "gate.weight"] = {experts, h};
    for (int64_t e = 0; e < experts; ++e) {
      const std::string x = absl::StrCat(moe, "experts.", e, ".");
      if (family == "mixtral") {
        n[x + "w1.weight"] = {width, h};
        n[x + "w3.weight"] = {width, h};
        n[x + "w2.weight"] = {h, width};
      } else {
        n[x + "gate_proj.weight"] = {width, h};
        n[x + "up_proj.weight"] = {width, h};
        n[x + "down_proj.weight"] = {h, width};
      }
    }
  }
  return n;
}

TEST(HfFixtures, EveryFamilyIsPresent) {
  std::set<std::string> families;
  for (const fs::path& d : FixtureDirs()) families.insert(ReadJson(d / "config.json")["model_type"]);
  EXPECT_EQ(families, (std::set<std::string>{"deepseek_v2", "deepseek_v3", "dots1", "granitemoe", "mixtral", "olmoe",
                                             "qwen2_moe", "qwen3_moe"}));
}

TEST(HfFixtures, ModelFilesHoldExactlyTheCanonicalNamesAndShapes) {
  for (const fs::path& d : FixtureDirs()) {
    SCOPED_TRACE(d.filename().string());
    const nlohmann::json config = ReadJson(d / "config.json");
    auto ckpt = Checkpoint::Open(d.string());
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    const auto expected = CanonicalNames(config);
    std::vector<std::string> want;
    for (const auto& [name, shape] : expected) want.push_back(name);
    EXPECT_EQ((*ckpt)->names(), want);
    for (const auto& [name, shape] : expected) {
      const TensorInfo* info = (*ckpt)->Find(name);
      ASSERT_NE(info, nullptr) << name;
      EXPECT_EQ(info->dtype, DType::kF32) << name;
      EXPECT_EQ(info->shape, shape) << name;
    }
  }
}

TEST(HfFixtures, GradFilesMatchTheirDeclaredSlots) {
  for (const fs::path& d : FixtureDirs()) {
    SCOPED_TRACE(d.filename().string());
    const nlohmann::json expected = ReadJson(d / "expected.json");
    const nlohmann::json config = ReadJson(d / "config.json");
    auto grads = SafetensorsFile::Open((d / "grads.safetensors").string());
    ASSERT_TRUE(grads.ok()) << grads.status();
    auto model = Checkpoint::Open(d.string());
    ASSERT_TRUE(model.ok());
    const auto& tensors = expected["grad"]["tensors"];
    EXPECT_EQ((*grads)->size(), tensors.size());
    EXPECT_EQ(tensors.size(), 3 * expected["grad"]["slots"].size());
    for (auto it = tensors.begin(); it != tensors.end(); ++it) {
      const TensorInfo* g = (*grads)->Find(it.key());
      const std::string weight = it.value().get<std::string>();
      ASSERT_NE(g, nullptr) << it.key();
      if (config["model_type"] == "granitemoe") {  // per-expert slices of the fused tensors
        const int64_t h = config["hidden_size"], width = Width(config);
        const bool down = weight.find("down_proj") != std::string::npos;
        EXPECT_EQ(g->shape, down ? std::vector<int64_t>({h, width}) : std::vector<int64_t>({width, h})) << weight;
      } else {
        const TensorInfo* w = (*model)->Find(weight);
        ASSERT_NE(w, nullptr) << it.value();
        EXPECT_EQ(g->shape, w->shape);
      }
      std::vector<float> values = *(*grads)->ReadF32(it.key());
      double sum_sq = 0;
      for (float v : values) sum_sq += double{v} * v;
      EXPECT_GT(sum_sq, 0.0) << it.key() << " is all zero: slot never routed?";
    }
    for (const auto& seq : expected["sequences"]) {
      EXPECT_GE(seq.size(), 2u);
    }
    EXPECT_EQ(expected["logprobs"].size(), expected["sequences"].size());
  }
}

TEST(HfFixtures, OurWriterReproducesPythonsTensorsBitForBit) {
  for (const fs::path& d : FixtureDirs()) {
    SCOPED_TRACE(d.filename().string());
    auto py = SafetensorsFile::Open((d / "model.safetensors").string());
    ASSERT_TRUE(py.ok()) << py.status();
    EXPECT_EQ(py.value()->metadata().at("format"), "pt");
    std::vector<HostTensor> tensors;
    for (const std::string& name : (*py)->names()) {
      const TensorInfo* info = (*py)->Find(name);
      tensors.push_back({name, info->dtype, info->shape, (*py)->RawBytes(name)->data()});
    }
    auto ours = SafetensorsFile::FromBytes(*SerializeSafetensors(tensors, (*py)->metadata()));
    ASSERT_TRUE(ours.ok()) << ours.status();
    ASSERT_EQ((*ours)->names(), (*py)->names());
    for (const std::string& name : (*py)->names()) {
      absl::Span<const uint8_t> a = *(*py)->RawBytes(name), b = *(*ours)->RawBytes(name);
      ASSERT_EQ(a.size(), b.size());
      EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin())) << name;
    }
  }
}

}  // namespace
}  // namespace tessera::io
