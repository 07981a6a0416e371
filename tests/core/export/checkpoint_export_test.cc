// WriteMergedCheckpoint on a hand-made backbone directory (mixed dtypes, tokenizer files): the merged
// expert tensors carry the overlay's exact f32 values (whatever the backbone's dtype), every other tensor is
// byte-identical, shards respect the size limit and the index maps every tensor, side files are copied,
// and bad overlays are refused by name.
#include "core/export/checkpoint_export.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/io/checkpoint.h"
#include "core/io/file_util.h"
#include "core/io/safetensors.h"
#include "core/model/config.h"
#include "core/model/hf_names.h"
#include "core/tensor/tensor.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/core/io/test_util.h"

namespace tessera::exporting {
namespace {
namespace fs = std::filesystem;

std::string Slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<float> Ramp(size_t n, float start, float step) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + step * static_cast<float>(i);
  return v;
}

std::vector<uint16_t> ToBf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = F32ToBf16(v[i]);
  return out;
}

const char kExpertGate[] = "model.layers.0.mlp.experts.1.gate_proj.weight";  // bf16 in the backbone
const char kExpertDown[] = "model.layers.1.mlp.experts.0.down_proj.weight";  // f32 in the backbone

class CheckpointExportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = io::testing::ScratchDir();
    backbone_ = root_ / "backbone";
    out_ = root_ / "out";
    fs::create_directories(backbone_);
    fs::create_directories(out_);
    embed_ = Ramp(64 * 8, -1.0f, 0.01f);
    gate_ = Ramp(6 * 8, 0.5f, 0.125f);
    down_ = Ramp(8 * 6, 2.0f, -0.0625f);
    norm_ = Ramp(8, 1.0f, 0.0f);
    std::vector<uint16_t> embed_bf16 = ToBf16(embed_), gate_bf16 = ToBf16(gate_);
    std::vector<io::HostTensor> tensors = {
        {"model.embed_tokens.weight", DType::kBF16, {64, 8}, embed_bf16.data()},
        {kExpertGate, DType::kBF16, {6, 8}, gate_bf16.data()},
        {kExpertDown, DType::kF32, {8, 6}, down_.data()},
        {"model.norm.weight", DType::kF32, {8}, norm_.data()},
    };
    ASSERT_TRUE(io::WriteSafetensorsFile((backbone_ / "model.safetensors").string(), tensors).ok());
    ASSERT_TRUE(io::WriteFileAtomically((backbone_ / "config.json").string(),
                                        R"({"model_type":"qwen3_moe","eos_token_id":7,"custom_key":[1,2]})")
                    .ok());
    ASSERT_TRUE(io::WriteFileAtomically((backbone_ / "tokenizer.json").string(), "{\"tok\":1}").ok());
    ASSERT_TRUE(io::WriteFileAtomically((backbone_ / "chat_template.jinja").string(), "{{ x }}").ok());
  }

  // An overlay blob replacing both expert tensors with new f32 values.
  std::string Overlay(std::vector<int64_t> gate_shape = {6, 8}) {
    new_gate_ = Ramp(6 * 8, -3.0f, 0.3333f);
    new_down_ = Ramp(8 * 6, 0.1f, 0.01f);
    std::vector<io::HostTensor> t = {{kExpertGate, DType::kF32, gate_shape, new_gate_.data()},
                                     {kExpertDown, DType::kF32, {8, 6}, new_down_.data()}};
    return io::SerializeSafetensors(t, {{"format", "tessera-expert-overlay-v1"}}).value();
  }

  CheckpointExportOptions Options(int64_t shard) {
    CheckpointExportOptions o;
    o.backbone_dir = backbone_.string();
    o.config.family = ModelFamily::kQwen3Moe;
    o.max_shard_bytes = shard;
    o.shard_metadata = {{"tessera_version", "3"}};
    o.bos_token_id = 256;
    o.eos_token_id = 257;
    o.suppress_tokens = {256, 258};
    return o;
  }

  fs::path root_, backbone_, out_;
  std::vector<float> embed_, gate_, down_, norm_, new_gate_, new_down_;
};

TEST_F(CheckpointExportTest, MergesOverlayIntoShardsInTheBackbonesDtypes) {
  // 300-byte shards: embed (1024 B) alone, then the rest packed by name order.
  absl::StatusOr<ExportedCheckpoint> r = WriteMergedCheckpoint(Options(300), Overlay(), out_.string());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->merged_tensors, 2);
  EXPECT_GE(r->num_shards, 2);
  ASSERT_TRUE(fs::exists(out_ / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(out_ / "model.safetensors"));

  nlohmann::json index = nlohmann::json::parse(Slurp(out_ / "model.safetensors.index.json"));
  EXPECT_EQ(index["weight_map"].size(), 4u);
  EXPECT_EQ(index["metadata"]["total_size"].get<int64_t>(), 64 * 8 * 2 + 6 * 8 * 4 + 8 * 6 * 4 + 8 * 4);
  for (int i = 1; i <= r->num_shards; ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05d-of-%05d.safetensors", i, r->num_shards);
    ASSERT_TRUE(fs::exists(out_ / name)) << name;
    auto shard = io::SafetensorsFile::Open((out_ / name).string());
    ASSERT_TRUE(shard.ok()) << shard.status();
    EXPECT_EQ((*shard)->metadata().at("format"), "pt");
    EXPECT_EQ((*shard)->metadata().at("tessera_version"), "3");
    size_t bytes = 0;
    for (const std::string& n : (*shard)->names()) bytes += (*shard)->Find(n)->nbytes;
    // Only a shard holding one tensor may exceed the limit.
    if ((*shard)->size() > 1) EXPECT_LE(bytes, 300u) << name;
  }

  auto ck = io::Checkpoint::Open(out_.string());
  ASSERT_TRUE(ck.ok()) << ck.status();
  ASSERT_EQ((*ck)->names().size(), 4u);
  // Merged: the overlay's exact values, f32 even where the backbone stores bf16.
  EXPECT_EQ((*ck)->Find(kExpertGate)->dtype, DType::kF32);
  EXPECT_EQ((*ck)->ReadF32(kExpertGate).value(), new_gate_);
  EXPECT_NE(new_gate_[1], Bf16ToF32(F32ToBf16(new_gate_[1])));  // the test would see a rounding
  EXPECT_EQ((*ck)->Find(kExpertDown)->dtype, DType::kF32);
  EXPECT_EQ((*ck)->ReadF32(kExpertDown).value(), new_down_);
  // Untouched: byte-identical to the backbone.
  auto base = io::Checkpoint::Open(backbone_.string()).value();
  for (const char* n : {"model.embed_tokens.weight", "model.norm.weight"}) {
    auto a = base->RawBytes(n).value();
    auto b = (*ck)->RawBytes(n).value();
    EXPECT_EQ(std::string(a.begin(), a.end()), std::string(b.begin(), b.end())) << n;
    EXPECT_EQ((*ck)->Find(n)->dtype, base->Find(n)->dtype) << n;
  }
  // Side files.
  EXPECT_EQ(Slurp(out_ / "config.json"), Slurp(backbone_ / "config.json"));
  EXPECT_EQ(Slurp(out_ / "tokenizer.json"), "{\"tok\":1}");
  EXPECT_EQ(Slurp(out_ / "chat_template.jinja"), "{{ x }}");
  EXPECT_FALSE(fs::exists(out_ / "tokenizer_config.json"));
  nlohmann::json gen = nlohmann::json::parse(Slurp(out_ / "generation_config.json"));
  EXPECT_EQ(gen["eos_token_id"], 7);    // from config.json
  EXPECT_EQ(gen["bos_token_id"], 256);  // fallback
  EXPECT_FALSE(gen.contains("pad_token_id"));
  EXPECT_EQ(gen["suppress_tokens"], nlohmann::json::array({256, 258}));
  std::vector<std::string> listed;
  for (const auto& e : fs::directory_iterator(out_)) listed.push_back(e.path().filename().string());
  std::sort(listed.begin(), listed.end());
  EXPECT_EQ(listed, r->files);
}

TEST_F(CheckpointExportTest, OneShardIsModelSafetensorsAndNoOverlayIsTheBase) {
  ASSERT_TRUE(io::WriteFileAtomically((backbone_ / "generation_config.json").string(), "{\"x\":1}").ok());
  absl::StatusOr<ExportedCheckpoint> r = WriteMergedCheckpoint(Options(1 << 20), "", out_.string());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->num_shards, 1);
  EXPECT_EQ(r->merged_tensors, 0);
  EXPECT_FALSE(fs::exists(out_ / "model.safetensors.index.json"));
  EXPECT_EQ(Slurp(out_ / "generation_config.json"), "{\"x\":1}");
  auto ck = io::Checkpoint::Open((out_ / "model.safetensors").string()).value();
  auto base = io::Checkpoint::Open(backbone_.string()).value();
  ASSERT_EQ(ck->names(), base->names());
  for (const std::string& n : base->names()) {
    auto a = base->RawBytes(n).value();
    auto b = ck->RawBytes(n).value();
    EXPECT_EQ(std::string(a.begin(), a.end()), std::string(b.begin(), b.end())) << n;
  }
}

TEST_F(CheckpointExportTest, RefusesOverlaysThatDoNotFitTheBackbone) {
  absl::StatusOr<ExportedCheckpoint> r = WriteMergedCheckpoint(Options(1 << 20), Overlay({8, 6}), out_.string());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find(kExpertGate), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("[8,6]"), std::string::npos) << r.status();

  std::vector<float> v(8, 1.0f);
  std::vector<io::HostTensor> not_expert = {{"model.norm.weight", DType::kF32, {8}, v.data()}};
  r = WriteMergedCheckpoint(Options(1 << 20), io::SerializeSafetensors(not_expert).value(), out_.string());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("model.norm.weight"), std::string::npos) << r.status();

  std::vector<float> w(6 * 8, 1.0f);
  std::vector<io::HostTensor> absent = {
      {"model.layers.3.mlp.experts.2.up_proj.weight", DType::kF32, {6, 8}, w.data()}};
  r = WriteMergedCheckpoint(Options(1 << 20), io::SerializeSafetensors(absent).value(), out_.string());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("model.layers.3.mlp.experts.2.up_proj.weight"), std::string::npos);

  EXPECT_EQ(WriteMergedCheckpoint(Options(0), "", out_.string()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::exporting

namespace tessera::exporting {
namespace {

// granitemoe stores experts fused (input_linear [E, 2F, D], output_linear [E, D, F]): a version's slot
// lands in its slices of the fused tensors; every other value stays the backbone's.
TEST(FusedExpertExportTest, SlotsAreWrittenIntoTheirFusedSlices) {
  const char* src = std::getenv("TESSERA_SOURCE_DIR");
  const fs::path backbone = fs::path(src != nullptr ? src : ".") / "tests" / "fixtures" / "hf" / "granitemoe_untied";
  const fs::path out = io::testing::ScratchDir() / "granite_out";
  fs::create_directories(out);
  const ModelConfig c = ModelConfig::FromFile(backbone.string()).value();
  const int64_t f = c.expert_dim, d = c.hidden_size;
  std::vector<float> up = Ramp(f * d, -1.0f, 0.01f), down = Ramp(d * f, 3.0f, -0.02f);
  const std::string up_name = hf::ExpertName(c.family, 1, 3, hf::ExpertPart::kUp);
  const std::string down_name = hf::ExpertName(c.family, 1, 3, hf::ExpertPart::kDown);
  std::vector<io::HostTensor> t = {{up_name, DType::kF32, {f, d}, up.data()}, {down_name, DType::kF32, {d, f}, down.data()}};
  CheckpointExportOptions o;
  o.backbone_dir = backbone.string();
  o.config = c;
  absl::StatusOr<ExportedCheckpoint> r = WriteMergedCheckpoint(o, io::SerializeSafetensors(t).value(), out.string());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->merged_tensors, 2);
  auto base = io::Checkpoint::Open(backbone.string()).value();
  auto got = io::Checkpoint::Open(out.string()).value();
  EXPECT_EQ(got->names(), base->names());  // no per-expert names added
  const std::string in_name = "model.layers.1.block_sparse_moe.input_linear.weight";
  const std::string out_name = "model.layers.1.block_sparse_moe.output_linear.weight";
  const std::vector<float> in_base = base->ReadF32(in_name).value(), in_got = got->ReadF32(in_name).value();
  const std::vector<float> out_got = got->ReadF32(out_name).value(), out_base = base->ReadF32(out_name).value();
  const int64_t up_at = (3 * 2 * f + f) * d, down_at = 3 * d * f;
  for (int64_t i = 0; i < static_cast<int64_t>(in_got.size()); ++i) {
    const bool slot = i >= up_at && i < up_at + f * d;
    ASSERT_EQ(in_got[i], slot ? up[i - up_at] : in_base[i]) << i;
  }
  for (int64_t i = 0; i < static_cast<int64_t>(out_got.size()); ++i) {
    const bool slot = i >= down_at && i < down_at + d * f;
    ASSERT_EQ(out_got[i], slot ? down[i - down_at] : out_base[i]) << i;
  }
  EXPECT_EQ(got->ReadF32("model.layers.0.block_sparse_moe.input_linear.weight").value(),
            base->ReadF32("model.layers.0.block_sparse_moe.input_linear.weight").value());
}

}  // namespace
}  // namespace tessera::exporting
