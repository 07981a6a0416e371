#include "core/train/backbone.h"

#include <filesystem>

#include "core/io/file_util.h"
#include "core/train/artifact.h"
#include "core/util/sha256.h"
#include "gtest/gtest.h"
#include "tests/core/train/test_models.h"

namespace tessera::train {
namespace {

namespace fs = std::filesystem;

TEST(Sha256Test, NistVectors) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(BackboneTest, LocatesAndLoadsABuiltinFromTheSearchPath) {
  auto be = MakeCpuBackend();
  const fs::path root = fs::temp_directory_path() / ("backbones_" + std::to_string(::getpid()));
  const fs::path dir = root / "builtin-test";
  fs::create_directories(dir);
  ModelConfig c = testing::SmallMoeConfig();
  auto w = *ModelWeights::RandomInit(c, 5, be.get());
  ASSERT_TRUE(io::WriteFileAtomically((dir / "config.json").string(), c.ToJson()).ok());
  ASSERT_TRUE(w.Save(c, be.get(), (dir / "model.safetensors").string()).ok());

  auto files = LocateBackbone("builtin:test", {"/nonexistent", root.string()});
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(files->dir, dir.string());
  auto b = LoadBackbone("builtin:test", be.get(), {root.string()});
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->config, c);
  EXPECT_EQ(b->sha256, *Sha256FileHex((dir / "model.safetensors").string()));
  EXPECT_EQ(*be->ToHostF32(b->weights.embed), *be->ToHostF32(w.embed));
  // A plain directory path works too.
  EXPECT_TRUE(LoadBackbone(dir.string(), be.get()).ok());

  auto missing = LocateBackbone("builtin:nope", {root.string()});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("builtin-nope"), std::string_view::npos);
  EXPECT_NE(missing.status().message().find("tessera-pretrain"), std::string_view::npos);
  fs::remove_all(root);
}

TEST(ArtifactTest, SlotListsRoundTrip) {
  std::vector<SlotId> slots = {{2, 11}, {0, 3}};
  EXPECT_EQ(SlotListString(slots), "L0.E3,L2.E11");
  auto parsed = ParseSlotList("L0.E3,L2.E11");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, (std::vector<SlotId>{{0, 3}, {2, 11}}));
  EXPECT_TRUE(ParseSlotList("")->empty());
  EXPECT_EQ(ParseSlotList("L0E3").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSlotList("L0.Ex").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::train
