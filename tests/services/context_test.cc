// A real server on a checkpoint directory (bf16, max_position_embeddings 4096): the serving dtype follows
// the checkpoint, the context follows the model beyond the old fixed 1024 positions, GetRuntimeStatus
// reports it, and a prompt that does not fit is INVALID_ARGUMENT with the numbers and the flag that raises
// it (the model's limit, --max-context, --kv-memory-bytes).
#include <filesystem>

#include "core/backend/backend.h"
#include "core/io/file_util.h"
#include "core/io/safetensors.h"
#include "core/model/kv_cache.h"
#include "core/model/weights.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "services/model_host.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

namespace fs = std::filesystem;

// builtin:tiny's vocabulary and family, narrower, with a 4096-position context.
ModelConfig LongConfig() {
  ModelConfig c = ModelConfig::BuiltinTiny();
  c.hidden_size = 64;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.num_experts = 8;
  c.top_k = 2;
  c.expert_dim = 32;
  c.max_position_embeddings = 4096;
  return c;
}

// Writes random weights of LongConfig() as a BF16 checkpoint directory.
fs::path WriteBf16Checkpoint() {
  const fs::path dir = fs::temp_directory_path() / ("tessera_context_ckpt_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const ModelConfig c = LongConfig();
  auto be = MakeCpuBackend();
  ModelWeights w = ModelWeights::RandomInit(c, 99, be.get()).value();
  std::vector<std::vector<uint16_t>> data;
  std::vector<io::HostTensor> tensors;
  for (const NamedParam& p : w.Parameters(c)) {
    std::vector<float> host = be->ToHostF32(*p.tensor).value();
    std::vector<uint16_t> bf(host.size());
    for (size_t i = 0; i < host.size(); ++i) bf[i] = F32ToBf16(host[i]);
    data.push_back(std::move(bf));
    tensors.push_back({p.name, DType::kBF16, p.tensor->shape(), data.back().data()});
  }
  EXPECT_TRUE(io::WriteSafetensorsFile((dir / "model.safetensors").string(), tensors).ok());
  nlohmann::json config = nlohmann::json::parse(c.ToJson());
  config["torch_dtype"] = "bfloat16";
  EXPECT_TRUE(io::WriteFileAtomically((dir / "config.json").string(), config.dump()).ok());
  return dir;
}

class ContextServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { dir_ = new fs::path(WriteBf16Checkpoint()); }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  static TestServerOptions Options() {
    TestServerOptions o = WithModel();
    o.backbone = dir_->string();
    o.dtype = "auto";
    return o;
  }
  static std::string Text(size_t n) {
    std::string s;
    for (size_t i = 0; i < n; ++i) s.push_back(static_cast<char>('a' + (i * 7 + i / 13) % 26));
    return s;
  }
  static grpc::Status Generate(TestServer& server, const std::string& key, const std::string& prompt,
                               v1::GenerateResponse* out) {
    v1::GenerateRequest r;
    r.set_tenant_id("acme");
    r.set_prompt(prompt);
    r.set_max_tokens(3);
    return server.Inference()->Generate(Ctx(key).get(), r, out);
  }
  static fs::path* dir_;
};
fs::path* ContextServerTest::dir_ = nullptr;

TEST_F(ContextServerTest, ServesTheModelsContextInItsCheckpointDtypeAndReportsIt) {
  TestServer server(Options());
  const std::string key = server.CreateTenant("acme");
  v1::RuntimeStatus status;
  ASSERT_TRUE(server.Admin()->GetRuntimeStatus(Ctx(server.admin_key()).get(), {}, &status).ok());
  EXPECT_EQ(status.context_length(), 4096);
  EXPECT_EQ(status.backbone().max_position_embeddings(), 4096);
  EXPECT_EQ(status.backbone().dtype(), "bf16");  // auto: the checkpoint is BF16
  EXPECT_EQ(status.backbone().tokenizer().rfind("byte, 259 tokens", 0), 0u) << status.backbone().tokenizer();
  EXPECT_EQ(status.kv_cache_bytes(), 16 * 4096 * KvCache::BytesPerPosition(LongConfig(), DType::kBF16));
  EXPECT_NE(DescribeBackbone(server.server().backbone()).find("context 4096"), std::string::npos);

  // 3001 tokens: past the old fixed 1024-position capacity.
  v1::GenerateResponse out;
  grpc::Status st = Generate(server, key, Text(3000), &out);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(out.usage().prompt_tokens(), 3001);
  EXPECT_GT(out.usage().completion_tokens(), 0);

  // BOS + 4096 bytes: one token more than the model's context.
  st = Generate(server, key, Text(4096), &out);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  for (const char* want : {"4097 tokens", "4096 positions", "max_position_embeddings"}) {
    EXPECT_NE(st.error_message().find(want), std::string::npos) << want << " in " << st.error_message();
  }
}

TEST_F(ContextServerTest, APromptBeyondTheFlagsIsRefusedNamingTheFlag) {
  const int64_t per = KvCache::BytesPerPosition(LongConfig(), DType::kBF16);
  struct Case {
    int64_t max_context, kv_memory_bytes, capacity;
    std::string flag;
  };
  for (const Case& c : {Case{1500, runtime::kDefaultKvMemoryBytes, 1500, "--max-context"},
                        Case{0, 2000 * per, 2000, "--kv-memory-bytes"}}) {
    SCOPED_TRACE(c.flag);
    TestServerOptions o = Options();
    o.max_context = c.max_context;
    o.kv_memory_bytes = c.kv_memory_bytes;
    TestServer server(o);
    const std::string key = server.CreateTenant("acme");
    v1::RuntimeStatus status;
    ASSERT_TRUE(server.Admin()->GetRuntimeStatus(Ctx(server.admin_key()).get(), {}, &status).ok());
    EXPECT_EQ(status.context_length(), c.capacity);
    v1::GenerateResponse out;
    grpc::Status st = Generate(server, key, Text(static_cast<size_t>(c.capacity)), &out);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    for (const std::string& want : {std::to_string(c.capacity + 1) + " tokens", std::to_string(c.capacity) + " positions", c.flag}) {
      EXPECT_NE(st.error_message().find(want), std::string::npos) << want << " in " << st.error_message();
    }
    ASSERT_TRUE(Generate(server, key, Text(static_cast<size_t>(c.capacity - 1)), &out).ok());
  }
}

TEST(ContextFlagsTest, UnusableValuesAreRefusedNamingTheFlag) {
  CoreOptions o;
  o.backbone = "random:tiny";
  o.max_context = 1;
  absl::StatusOr<ServerComponents> c = MakeCoreComponents(o);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("--max-context"), std::string_view::npos) << c.status();
  o.max_context = 0;
  o.kv_memory_bytes = 0;
  c = MakeCoreComponents(o);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("--kv-memory-bytes"), std::string_view::npos) << c.status();
  // A budget too small for two positions per sequence: the engine is not built, naming the flag.
  o.kv_memory_bytes = 1000;
  c = MakeCoreComponents(o);
  ASSERT_TRUE(c.ok()) << c.status();
  absl::StatusOr<std::unique_ptr<InferenceEngine>> e = c->make_engine(nullptr);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(e.status().message().find("--kv-memory-bytes"), std::string_view::npos) << e.status();
}

}  // namespace
}  // namespace tessera::services::testing
