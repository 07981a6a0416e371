// Checkpoint over a single file and over a sharded set with model.safetensors.index.json.
#include "core/io/checkpoint.h"

#include <filesystem>
#include <fstream>

#include "core/io/file_util.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/core/io/test_util.h"

namespace tessera::io {
namespace {

namespace fs = std::filesystem;

// Writes two shards of bf16/f32 tensors plus an index; returns the directory.
fs::path MakeSharded(std::vector<float>* a, std::vector<float>* b, std::vector<uint16_t>* c) {
  const fs::path dir = testing::ScratchDir();
  *a = {1, 2, 3, 4, 5, 6};
  *b = {-1, -2};
  *c = {F32ToBf16(0.5f), F32ToBf16(-8.0f), F32ToBf16(3.0f)};
  std::vector<HostTensor> s1 = {{"model.layers.0.w", DType::kF32, {2, 3}, a->data()},
                                {"model.norm.weight", DType::kF32, {2}, b->data()}};
  std::vector<HostTensor> s2 = {{"lm_head.weight", DType::kBF16, {3}, c->data()}};
  EXPECT_TRUE(WriteSafetensorsFile((dir / "model-00001-of-00002.safetensors").string(), s1).ok());
  EXPECT_TRUE(WriteSafetensorsFile((dir / "model-00002-of-00002.safetensors").string(), s2).ok());
  nlohmann::json index = {
      {"metadata", {{"total_size", 38}}},
      {"weight_map",
       {{"model.layers.0.w", "model-00001-of-00002.safetensors"},
        {"model.norm.weight", "model-00001-of-00002.safetensors"},
        {"lm_head.weight", "model-00002-of-00002.safetensors"}}}};
  EXPECT_TRUE(WriteFileAtomically((dir / "model.safetensors.index.json").string(), index.dump()).ok());
  return dir;
}

TEST(Checkpoint, ShardedReadsRouteToTheRightShard) {
  std::vector<float> a, b;
  std::vector<uint16_t> c;
  const fs::path dir = MakeSharded(&a, &b, &c);
  for (const fs::path& p : {dir, dir / "model.safetensors.index.json"}) {
    auto ckpt = Checkpoint::Open(p.string());
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    EXPECT_EQ((*ckpt)->num_shards(), 2u);
    EXPECT_EQ((*ckpt)->names(),
              (std::vector<std::string>{"lm_head.weight", "model.layers.0.w", "model.norm.weight"}));
    EXPECT_EQ((*ckpt)->metadata().at("total_size"), "38");
    EXPECT_EQ(*(*ckpt)->ReadF32("model.layers.0.w"), a);
    EXPECT_EQ(*(*ckpt)->ReadF32("model.norm.weight"), b);
    EXPECT_EQ(*(*ckpt)->ReadF32("lm_head.weight"), (std::vector<float>{0.5f, -8.0f, 3.0f}));
    EXPECT_NE((*ckpt)->ShardOf("lm_head.weight").find("model-00002-of-00002"), std::string::npos);
    EXPECT_EQ((*ckpt)->Find("lm_head.weight")->dtype, DType::kBF16);
    EXPECT_EQ((*ckpt)->RawBytes("lm_head.weight")->size(), 6u);

    std::vector<float> dst(6);
    absl::Status s = (*ckpt)->ReadF32Into("model.layers.0.w", {3, 2}, dst.data());
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("model.layers.0.w"), std::string::npos);
    EXPECT_NE(s.message().find("model-00001-of-00002"), std::string::npos) << "names the shard: " << s;
    s = (*ckpt)->ReadF32Into("model.layers.1.w", {2, 3}, dst.data());
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
    EXPECT_NE(s.message().find("model.layers.1.w"), std::string::npos);
  }
}

TEST(Checkpoint, MissingShardIsNotFound) {
  std::vector<float> a, b;
  std::vector<uint16_t> c;
  const fs::path dir = MakeSharded(&a, &b, &c);
  fs::remove(dir / "model-00002-of-00002.safetensors");
  auto ckpt = Checkpoint::Open(dir.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(ckpt.status().message().find("model-00002-of-00002.safetensors"), std::string::npos);
  EXPECT_NE(ckpt.status().message().find("lm_head.weight"), std::string::npos) << ckpt.status();
}

TEST(Checkpoint, IndexNamingATensorItsShardLacksIsNotFound) {
  std::vector<float> a, b;
  std::vector<uint16_t> c;
  const fs::path dir = MakeSharded(&a, &b, &c);
  nlohmann::json index = {{"weight_map", {{"ghost", "model-00001-of-00002.safetensors"}}}};
  ASSERT_TRUE(WriteFileAtomically((dir / "model.safetensors.index.json").string(), index.dump()).ok());
  auto ckpt = Checkpoint::Open(dir.string());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(ckpt.status().message().find("'ghost'"), std::string::npos) << ckpt.status();
}

TEST(Checkpoint, BadIndexAndCorruptShardAreErrors) {
  std::vector<float> a, b;
  std::vector<uint16_t> c;
  const fs::path dir = MakeSharded(&a, &b, &c);
  ASSERT_TRUE(WriteFileAtomically((dir / "model-00002-of-00002.safetensors").string(), "garbage!!").ok());
  auto ckpt = Checkpoint::Open(dir.string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_NE(ckpt.status().message().find("model-00002-of-00002.safetensors"), std::string::npos);

  for (std::string text : {"not json", "[]", "{\"weight_map\": 3}", "{\"weight_map\": {\"x\": 5}}",
                           "{\"weight_map\": {\"x\": \"../escape.safetensors\"}}"}) {
    ASSERT_TRUE(WriteFileAtomically((dir / "model.safetensors.index.json").string(), text).ok());
    auto bad = Checkpoint::Open(dir.string());
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << text << ": " << bad.status();
  }
}

TEST(Checkpoint, SingleFileByDirectoryOrPath) {
  const fs::path dir = testing::ScratchDir();
  std::vector<float> w = {1, 2, 3};
  std::vector<HostTensor> t = {{"w", DType::kF32, {3}, w.data()}};
  ASSERT_TRUE(WriteSafetensorsFile((dir / "model.safetensors").string(), t, {{"format", "pt"}}).ok());
  for (const fs::path& p : {dir, dir / "model.safetensors"}) {
    auto ckpt = Checkpoint::Open(p.string());
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    EXPECT_EQ((*ckpt)->num_shards(), 1u);
    EXPECT_EQ((*ckpt)->metadata().at("format"), "pt");
    EXPECT_EQ(*(*ckpt)->ReadF32("w"), w);
  }
  EXPECT_EQ(Checkpoint::Open((dir / "absent").string()).status().code(), absl::StatusCode::kNotFound);
  const fs::path empty = dir / "empty_dir";
  fs::create_directories(empty);
  EXPECT_EQ(Checkpoint::Open(empty.string()).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tessera::io
