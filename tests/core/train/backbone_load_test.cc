// Loading checkpoints into their serving dtype: BF16/F16/F32 files into f32 or bf16 matrices (bitwise
// equal to loading in f32 then WithMatrixDtype), the "auto" dtype rule, sharded checkpoints (same
// weights, digest over index + shards) and their errors naming the shard or tensor.
#include <filesystem>
#include <fstream>

#include "core/io/file_util.h"
#include "core/io/safetensors.h"
#include "core/train/backbone.h"
#include "core/util/sha256.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/core/train/test_models.h"

namespace tessera::train {
namespace {

namespace fs = std::filesystem;

fs::path Scratch(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("backbone_load_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Writes `w` as an HF checkpoint in `dir`, every tensor stored as `dtype`, in `shards` files (with
// model.safetensors.index.json when > 1, tensors dealt round-robin); config.json declares `config_dtype`
// as "torch_dtype" (none when empty).
void WriteCheckpoint(const ModelConfig& c, ModelWeights w, Backend* be, const fs::path& dir, DType dtype,
                     int shards, const std::string& config_dtype) {
  nlohmann::json config = nlohmann::json::parse(c.ToJson());
  config.erase("torch_dtype");
  if (!config_dtype.empty()) config["torch_dtype"] = config_dtype;
  ASSERT_TRUE(io::WriteFileAtomically((dir / "config.json").string(), config.dump()).ok());
  std::vector<NamedParam> params = w.Parameters(c);
  std::vector<std::vector<uint8_t>> bytes(params.size());
  std::vector<std::vector<io::HostTensor>> files(shards);
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t i = 0; i < params.size(); ++i) {
    std::vector<float> host = *be->ToHostF32(*params[i].tensor);
    bytes[i].resize(host.size() * DTypeSize(dtype));
    ASSERT_TRUE(io::ConvertFloat(DType::kF32, reinterpret_cast<const uint8_t*>(host.data()), host.size(), dtype,
                                 bytes[i].data())
                    .ok());
    const int shard = static_cast<int>(i % shards);
    files[shard].push_back({params[i].name, dtype, params[i].tensor->shape(), bytes[i].data()});
    weight_map[params[i].name] = "model-0000" + std::to_string(shard + 1) + "-of-0000" + std::to_string(shards) +
                                 ".safetensors";
  }
  if (shards == 1) {
    ASSERT_TRUE(io::WriteSafetensorsFile((dir / "model.safetensors").string(), files[0]).ok());
    return;
  }
  for (int s = 0; s < shards; ++s) {
    const std::string name = "model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(shards) + ".safetensors";
    ASSERT_TRUE(io::WriteSafetensorsFile((dir / name).string(), files[s]).ok());
  }
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  ASSERT_TRUE(io::WriteFileAtomically((dir / "model.safetensors.index.json").string(), index.dump()).ok());
}

// Every tensor's bytes, in Parameters() order.
std::vector<std::vector<uint8_t>> AllBytes(const ModelConfig& c, ModelWeights w, Backend* be) {
  std::vector<std::vector<uint8_t>> out;
  for (const NamedParam& p : w.Parameters(c)) {
    std::vector<uint8_t> b(p.tensor->nbytes());
    EXPECT_TRUE(be->CopyToHost(*p.tensor, b.data(), b.size()).ok());
    out.push_back(std::move(b));
  }
  return out;
}

TEST(ResolveMatrixDtype, ExplicitWinsAutoFollowsTheConfigThenTheFile) {
  EXPECT_EQ(*ResolveMatrixDtype("f32", "bfloat16", DType::kBF16), DType::kF32);
  EXPECT_EQ(*ResolveMatrixDtype("bf16", "float32", DType::kF32), DType::kBF16);
  EXPECT_EQ(*ResolveMatrixDtype("auto", "bfloat16", DType::kF32), DType::kBF16);
  EXPECT_EQ(*ResolveMatrixDtype("auto", "float16", DType::kF16), DType::kBF16);
  EXPECT_EQ(*ResolveMatrixDtype("auto", "float32", DType::kBF16), DType::kF32);  // builtin:tiny
  EXPECT_EQ(*ResolveMatrixDtype("auto", "", DType::kBF16), DType::kBF16);
  EXPECT_EQ(*ResolveMatrixDtype("auto", "", DType::kF16), DType::kBF16);
  EXPECT_EQ(*ResolveMatrixDtype("auto", "", DType::kF32), DType::kF32);
  absl::StatusOr<DType> bad = ResolveMatrixDtype("f16", "", DType::kF32);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("--dtype"), std::string_view::npos);
}

TEST(LoadBackbone, SixteenBitCheckpointsLoadStraightIntoTheServingDtype) {
  auto be = MakeCpuBackend();
  const ModelConfig c = testing::SmallMoeConfig();
  ModelWeights w = *ModelWeights::RandomInit(c, 11, be.get());
  for (DType stored : {DType::kBF16, DType::kF16, DType::kF32}) {
    SCOPED_TRACE(DTypeName(stored));
    const fs::path dir = Scratch(DTypeName(stored));
    WriteCheckpoint(c, w, be.get(), dir, stored, 1, "");
    // The reference: the file widened to f32 (exact), then converted on the backend.
    absl::StatusOr<Backbone> f32 = LoadBackbone(dir.string(), be.get(), {}, "f32");
    ASSERT_TRUE(f32.ok()) << f32.status();
    EXPECT_EQ(f32->weights.matrix_dtype(), DType::kF32);
    EXPECT_EQ(f32->stored_dtype, stored);
    ModelWeights ref = *f32->weights.WithMatrixDtype(c, DType::kBF16, be.get());

    absl::StatusOr<Backbone> bf16 = LoadBackbone(dir.string(), be.get(), {}, "bf16");
    ASSERT_TRUE(bf16.ok()) << bf16.status();
    ASSERT_TRUE(bf16->weights.CheckShapes(c, DeviceKind::kCpu, DType::kBF16).ok());
    EXPECT_EQ(AllBytes(c, bf16->weights, be.get()), AllBytes(c, ref, be.get()));

    absl::StatusOr<Backbone> automatic = LoadBackbone(dir.string(), be.get(), {}, "auto");
    ASSERT_TRUE(automatic.ok()) << automatic.status();
    EXPECT_EQ(automatic->weights.matrix_dtype(), stored == DType::kF32 ? DType::kF32 : DType::kBF16);
    // An f32 file loads exactly what was saved.
    if (stored == DType::kF32) EXPECT_EQ(AllBytes(c, automatic->weights, be.get()), AllBytes(c, w, be.get()));
    // The config's declared dtype takes precedence over the file's (builtin:tiny: float32 over BF16 data).
    WriteCheckpoint(c, w, be.get(), dir, stored, 1, stored == DType::kF32 ? "bfloat16" : "float32");
    absl::StatusOr<Backbone> declared = LoadBackbone(dir.string(), be.get(), {}, "auto");
    ASSERT_TRUE(declared.ok()) << declared.status();
    EXPECT_EQ(declared->weights.matrix_dtype(), stored == DType::kF32 ? DType::kBF16 : DType::kF32);
    fs::remove_all(dir);
  }
}

TEST(LoadBackbone, ShardedCheckpointsLoadLikeOneFileAndNameWhatIsMissing) {
  auto be = MakeCpuBackend();
  const ModelConfig c = testing::SmallMoeConfig();
  ModelWeights w = *ModelWeights::RandomInit(c, 12, be.get());
  const fs::path single = Scratch("single");
  const fs::path sharded = Scratch("sharded");
  WriteCheckpoint(c, w, be.get(), single, DType::kBF16, 1, "bfloat16");
  WriteCheckpoint(c, w, be.get(), sharded, DType::kBF16, 3, "bfloat16");
  auto one = LoadBackbone(single.string(), be.get(), {}, "auto");
  auto three = LoadBackbone(sharded.string(), be.get(), {}, "auto");
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_TRUE(three.ok()) << three.status();
  EXPECT_EQ(three->weights.matrix_dtype(), DType::kBF16);
  EXPECT_EQ(AllBytes(c, three->weights, be.get()), AllBytes(c, one->weights, be.get()));
  EXPECT_EQ(three->files.weights_path, (sharded / "model.safetensors.index.json").string());

  // The digest covers the index and every shard, so changing any shard changes the identity.
  Sha256 sha;
  for (const char* f : {"model.safetensors.index.json", "model-00001-of-00003.safetensors",
                        "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"}) {
    std::string bytes = *io::ReadFileToString((sharded / f).string());
    sha.Update(bytes);
  }
  EXPECT_EQ(three->sha256, sha.FinishHex());
  EXPECT_EQ(one->sha256, *Sha256FileHex((single / "model.safetensors").string()));

  // A shard file gone: NOT_FOUND naming the shard and a tensor it holds.
  fs::rename(sharded / "model-00002-of-00003.safetensors", sharded / "moved.safetensors");
  auto gone = LoadBackbone(sharded.string(), be.get(), {}, "auto");
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(gone.status().message().find("model-00002-of-00003.safetensors"), std::string_view::npos) << gone.status();
  fs::rename(sharded / "moved.safetensors", sharded / "model-00002-of-00003.safetensors");

  // A tensor the index does not map: NOT_FOUND naming the tensor and the index.
  const std::string index_path = (sharded / "model.safetensors.index.json").string();
  nlohmann::json index = nlohmann::json::parse(*io::ReadFileToString(index_path));
  const std::string dropped = "model.layers.1.mlp.experts.3.up_proj.weight";
  ASSERT_EQ(index["weight_map"].erase(dropped), 1u);
  ASSERT_TRUE(io::WriteFileAtomically(index_path, index.dump()).ok());
  auto unmapped = LoadBackbone(sharded.string(), be.get(), {}, "auto");
  EXPECT_EQ(unmapped.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(unmapped.status().message().find(dropped), std::string_view::npos) << unmapped.status();
  EXPECT_NE(unmapped.status().message().find("model.safetensors.index.json"), std::string_view::npos)
      << unmapped.status();
  fs::remove_all(single);
  fs::remove_all(sharded);
}

// On a GPU the pieces are uploaded into views of device tensors: the same bytes as a CPU load.
TEST(LoadBackbone, LoadsIntoDeviceTensorsLikeOnTheCpu) {
  absl::StatusOr<std::unique_ptr<Backend>> cuda = MakeCudaBackend();
  if (!cuda.ok()) GTEST_SKIP() << "no CUDA device: " << cuda.status();
  auto cpu = MakeCpuBackend();
  const ModelConfig c = testing::SmallMoeConfig();
  ModelWeights w = *ModelWeights::RandomInit(c, 13, cpu.get());
  const fs::path dir = Scratch("cuda");
  WriteCheckpoint(c, w, cpu.get(), dir, DType::kF16, 2, "float16");
  auto on_cpu = LoadBackbone(dir.string(), cpu.get(), {}, "auto");
  auto on_gpu = LoadBackbone(dir.string(), cuda->get(), {}, "auto");
  ASSERT_TRUE(on_cpu.ok()) << on_cpu.status();
  ASSERT_TRUE(on_gpu.ok()) << on_gpu.status();
  ASSERT_TRUE(on_gpu->weights.CheckShapes(c, DeviceKind::kCuda, DType::kBF16).ok());
  EXPECT_EQ(AllBytes(c, on_gpu->weights, cuda->get()), AllBytes(c, on_cpu->weights, cpu.get()));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tessera::train
