// LoRA as a product option, on a real server (builtin:tiny) on loopback:
// - a `method: lora` job trains, its Job echoes method and rank, and its version reports method, rank
//   and its size -- the factors only, far smaller than an expert-only version of the same job (both
//   printed);
// - Generate/Score with the LoRA version work: the server serves what the explicitly merged weights
//   compute (Score within float tolerance, greedy output identical), and not what the base computes;
// - a full export of the LoRA version is the merged checkpoint (reloaded by Tessera: bitwise the merged
//   weights' log-probs), overlay_only gives the factors byte for byte with "method": "lora";
// - continuing from the LoRA version (LoRA with the same rank by default, or expert-only) works, and a
//   rank that cannot continue it fails the job naming lora_rank;
// - the request's method and lora_rank are validated, naming the field.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "core/model/lora_overlay.h"
#include "core/train/backbone.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "services/model_host.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {
namespace fs = std::filesystem;

v1::Job GetJob(TestServer& server, const std::string& key, const std::string& tenant, const std::string& id) {
  v1::GetJobRequest g;
  g.set_tenant_id(tenant);
  g.set_job_id(id);
  v1::Job job;
  const grpc::Status s = server.FineTuning()->GetJob(Ctx(key).get(), g, &job);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return job;
}

// Creates the job and follows WatchJob until it ends; returns the job then.
v1::Job RunJob(TestServer& server, const std::string& key, const v1::CreateJobRequest& req) {
  v1::Job job;
  const grpc::Status created = server.FineTuning()->CreateJob(Ctx(key).get(), req, &job);
  EXPECT_TRUE(created.ok()) << created.error_message();
  if (!created.ok()) return job;
  v1::WatchJobRequest w;
  w.set_tenant_id(req.tenant_id());
  w.set_job_id(job.job_id());
  auto ctx = Ctx(key);
  auto reader = server.FineTuning()->WatchJob(ctx.get(), w);
  v1::JobEvent e;
  while (reader->Read(&e)) {
  }
  EXPECT_TRUE(reader->Finish().ok());
  return GetJob(server, key, req.tenant_id(), job.job_id());
}

v1::ExpertVersion GetVersion(TestServer& server, const std::string& key, const std::string& tenant, int64_t v) {
  v1::GetVersionRequest r;
  r.set_tenant_id(tenant);
  r.set_version(v);
  v1::ExpertVersion out;
  const grpc::Status s = server.Experts()->GetVersion(Ctx(key).get(), r, &out);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return out;
}

std::string Slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Writes one ExportVersion stream's files into `dir`.
grpc::Status ExportInto(TestServer& server, const std::string& key, const std::string& tenant, int64_t version,
                        bool overlay_only, const fs::path& dir) {
  fs::create_directories(dir);
  v1::ExportVersionRequest req;
  req.set_tenant_id(tenant);
  req.set_version(version);
  req.set_overlay_only(overlay_only);
  auto ctx = Ctx(key);
  auto stub = server.Experts();
  auto reader = stub->ExportVersion(ctx.get(), req);
  v1::ExportChunk c;
  std::map<std::string, std::string> files;
  while (reader->Read(&c)) {
    if (!c.path().empty()) files[c.path()] += c.data();
  }
  for (const auto& [path, bytes] : files) std::ofstream(dir / path, std::ios::binary) << bytes;
  return reader->Finish();
}

std::vector<float> LogProbs(const Model& model, const ExpertOverlay* overlay, const std::string& text) {
  std::vector<int32_t> ids = {256};
  for (unsigned char ch : text) ids.push_back(ch);
  SequenceInput in{ids, overlay, nullptr};
  auto lp = model.ScoreTokens(absl::MakeConstSpan(&in, 1));
  EXPECT_TRUE(lp.ok()) << lp.status();
  return lp.ok() ? (*lp)[0] : std::vector<float>{};
}

class LoraServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    TestServerOptions o;
    o.model = true;
    o.training = true;
    o.backbone = "builtin:tiny";
    o.max_joint_jobs = 4;  // as tessera-server by default: LoRA jobs, like expert-only ones, join a loop
    server_ = new TestServer(o);
    auto m = LoadModel("builtin:tiny", "cpu");
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = m->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    delete model_;
    server_ = nullptr;
    model_ = nullptr;
  }
  void SetUp() override {
    char tmpl[] = "/tmp/tessera_lora_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    tmp_ = tmpl;
  }
  void TearDown() override { fs::remove_all(tmp_); }

  static v1::CreateJobRequest Request(const std::string& tenant, const std::string& dataset, const std::string& method,
                                      int rank) {
    v1::CreateJobRequest req;
    req.set_tenant_id(tenant);
    req.set_training_dataset_id(dataset);
    req.mutable_hyperparameters()->set_max_steps(12);
    req.mutable_hyperparameters()->set_batch_size(8);
    req.mutable_hyperparameters()->set_seq_len(32);
    req.mutable_hyperparameters()->set_learning_rate(1e-2);
    req.mutable_hyperparameters()->set_seed(3);
    for (auto [l, e] : {std::pair{0, 1}, {1, 4}, {2, 7}, {3, 10}}) {
      v1::Slot* s = req.mutable_expert_selection()->mutable_explicit_()->add_slots();
      s->set_layer(l);
      s->set_expert(e);
    }
    req.set_base_version(0);
    req.set_method(method);
    req.set_lora_rank(rank);
    return req;
  }

  static TestServer* server_;
  static LoadedModel* model_;
  fs::path tmp_;
};

TestServer* LoraServiceTest::server_ = nullptr;
LoadedModel* LoraServiceTest::model_ = nullptr;

constexpr char kText[] = "add(12,30)=42 and add(7,8)=15";

TEST_F(LoraServiceTest, LoraJobVersionIsSmallServedMergedAndExportedMerged) {
  const std::string key = server_->CreateTenant("lora");
  v1::Dataset ds;
  ASSERT_TRUE(server_->Upload(key, "lora", "add", AdditionJsonl(64), &ds).ok());

  const v1::Job lj = RunJob(*server_, key, Request("lora", ds.dataset_id(), "lora", 4));
  ASSERT_EQ(lj.state(), v1::SUCCEEDED) << lj.error();
  EXPECT_EQ(lj.method(), "lora");
  EXPECT_EQ(lj.lora_rank(), 4);
  const v1::Job ej = RunJob(*server_, key, Request("lora", ds.dataset_id(), "esft", 0));
  ASSERT_EQ(ej.state(), v1::SUCCEEDED) << ej.error();
  EXPECT_EQ(ej.method(), "esft");
  EXPECT_EQ(ej.lora_rank(), 0);

  const v1::ExpertVersion lv = GetVersion(*server_, key, "lora", lj.result_version());
  const v1::ExpertVersion ev = GetVersion(*server_, key, "lora", ej.result_version());
  EXPECT_EQ(lv.method(), "lora");
  EXPECT_EQ(lv.lora_rank(), 4);
  EXPECT_EQ(ev.method(), "esft");
  EXPECT_EQ(lv.slots_size(), 4);
  EXPECT_LT(lv.metrics().val_loss(), lv.metrics().base_val_loss());  // it learned something
  // The factors only: 4 slots x 3 parts x r (D + F) floats against 4 x 3 x F D for the full slots.
  const ModelConfig& c = model_->model->config();
  const int64_t factor_bytes = 4 * 3 * 4 * (c.hidden_size + c.expert_dim) * 4;
  const int64_t dense_bytes = 4 * 3 * c.hidden_size * c.expert_dim * 4;
  std::printf("version bytes, same job and slots: lora r4 %lld (factors %lld)  esft %lld (weights %lld)  ratio %.3f\n",
              static_cast<long long>(lv.size_bytes()), static_cast<long long>(factor_bytes),
              static_cast<long long>(ev.size_bytes()), static_cast<long long>(dense_bytes),
              static_cast<double>(lv.size_bytes()) / static_cast<double>(ev.size_bytes()));
  EXPECT_GE(lv.size_bytes(), factor_bytes);
  EXPECT_LT(lv.size_bytes(), factor_bytes + 16384);  // + the safetensors header and metadata
  EXPECT_GE(ev.size_bytes(), dense_bytes);
  EXPECT_LT(lv.size_bytes() * 4, ev.size_bytes());

  // The stored blob is self-describing LoRA; merged explicitly on the host it is what the server serves.
  const storage::ExpertVersion row = server_->registry().GetVersion("lora", lj.result_version()).value();
  EXPECT_EQ(row.method, "lora");
  const std::string blob = server_->registry().blobs().Get(row.sha256).value();
  ASSERT_TRUE(IsLoraBlob(blob));
  auto adapter = LoraAdapter::Parse(c, blob);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_EQ(adapter->rank, 4);
  std::map<tessera::SlotId, ExpertWeights> merged;
  for (const auto& [slot, parts] : adapter->factors) {
    ExpertWeights w;
    const ExpertWeights& base = model_->model->weights().layers[slot.layer].experts[slot.expert];
    for (int p = 0; p < 3; ++p) {
      const std::vector<int64_t> shape = ExpertPartShape(c, p);
      std::vector<float> v = model_->backend->ToHostF32(p == 0 ? base.gate : p == 1 ? base.up : base.down).value();
      for (int64_t i = 0; i < shape[0]; ++i) {
        for (int64_t j = 0; j < shape[1]; ++j) {
          double acc = 0;
          for (int64_t k = 0; k < adapter->rank; ++k) {
            acc += double{parts[p].b[i * adapter->rank + k]} * parts[p].a[k * shape[1] + j];
          }
          v[i * shape[1] + j] = static_cast<float>(v[i * shape[1] + j] + adapter->scale() * acc);
        }
      }
      (p == 0 ? w.gate : p == 1 ? w.up : w.down) = model_->backend->FromHost(v, shape).value();
    }
    merged[slot] = w;
  }
  auto explicit_overlay = ExpertOverlay::FromWeights(c, merged, model_->backend.get());
  ASSERT_TRUE(explicit_overlay.ok());
  const std::vector<float> want = LogProbs(*model_->model, explicit_overlay->get(), kText);
  double want_sum = 0, base_sum = 0;
  for (float x : want) want_sum += x;
  for (float x : LogProbs(*model_->model, nullptr, kText)) base_sum += x;
  v1::ScoreRequest sr;
  sr.set_tenant_id("lora");
  sr.set_text(kText);
  sr.set_version(lj.result_version());
  v1::ScoreResponse score;
  ASSERT_TRUE(server_->Inference()->Score(Ctx(key).get(), sr, &score).ok());
  EXPECT_EQ(score.expert_version(), lj.result_version());
  EXPECT_NEAR(score.total_logprob(), want_sum, 1e-4 * std::abs(want_sum));
  EXPECT_GT(std::abs(score.total_logprob() - base_sum), 1e-2);  // and it is not the base
  // Generate with it (greedy): the server's tokens are the explicitly merged weights' tokens.
  v1::GenerateRequest gr;
  gr.set_tenant_id("lora");
  gr.set_prompt("add(12,30)=");
  gr.set_max_tokens(8);
  gr.set_version(lj.result_version());
  gr.set_temperature(0);
  v1::GenerateResponse out;
  const grpc::Status gs = server_->Inference()->Generate(Ctx(key).get(), gr, &out);
  ASSERT_TRUE(gs.ok()) << gs.error_message();
  EXPECT_EQ(out.expert_version(), lj.result_version());
  std::vector<int32_t> ids = {256};
  for (unsigned char ch : std::string("add(12,30)=")) ids.push_back(ch);
  std::string local;
  for (int i = 0; i < 8; ++i) {
    SequenceInput in{ids, explicit_overlay->get(), nullptr};
    auto r = model_->model->Forward(absl::MakeConstSpan(&in, 1));
    ASSERT_TRUE(r.ok());
    std::vector<float> logits = model_->backend->ToHostF32(r->logits).value();
    int32_t best = 0;
    for (int32_t t = 0; t < 256; ++t) {  // byte ids only (the server never samples specials but EOS)
      if (logits[t] > logits[best]) best = t;
    }
    if (logits[257] > logits[best]) break;  // EOS
    ids.push_back(best);
    local.push_back(static_cast<char>(best));
  }
  EXPECT_EQ(out.usage().completion_tokens(), static_cast<int32_t>(local.size()));
  bool ascii = true;
  for (char ch : local) ascii &= static_cast<unsigned char>(ch) < 128;
  if (ascii) {
    EXPECT_EQ(out.text(), local);  // else the response replaced invalid UTF-8
  }

  // Full export: the merged checkpoint. Tessera's own loader reads it; it computes bitwise what the
  // backbone computes with the version merged when loaded (the runtime's path).
  ASSERT_TRUE(ExportInto(*server_, key, "lora", lj.result_version(), false, tmp_ / "ckpt").ok());
  auto backend = MakeBackend("cpu");
  ASSERT_TRUE(backend.ok());
  auto loaded = train::LoadBackbone((tmp_ / "ckpt").string(), backend->get());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto exported = Model::Create(loaded->config, loaded->weights, backend->get());
  ASSERT_TRUE(exported.ok());
  auto served = LoadVersionOverlay(c, blob, &model_->model->weights(), model_->backend.get());
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_EQ(LogProbs(**exported, nullptr, kText), LogProbs(*model_->model, served->get(), kText));
  // overlay_only: the factors as stored, byte for byte, and the manifest says so.
  ASSERT_TRUE(ExportInto(*server_, key, "lora", lj.result_version(), true, tmp_ / "ov").ok());
  EXPECT_EQ(Slurp(tmp_ / "ov" / "overlay.safetensors"), blob);
  auto manifest = nlohmann::json::parse(Slurp(tmp_ / "ov" / "manifest.json"));
  EXPECT_EQ(manifest["method"], "lora");
  EXPECT_EQ(manifest["lora_rank"], 4);

  // Continuing from the LoRA version: LoRA (its rank by default), expert-only, and a rank that cannot.
  v1::CreateJobRequest cont = Request("lora", ds.dataset_id(), "lora", 0);
  cont.set_base_version(lj.result_version());
  cont.mutable_hyperparameters()->set_max_steps(3);
  const v1::Job cj = RunJob(*server_, key, cont);
  ASSERT_EQ(cj.state(), v1::SUCCEEDED) << cj.error();
  const v1::ExpertVersion cv = GetVersion(*server_, key, "lora", cj.result_version());
  EXPECT_EQ(cv.method(), "lora");
  EXPECT_EQ(cv.lora_rank(), 4);
  EXPECT_EQ(cv.parent_version(), lj.result_version());
  v1::CreateJobRequest esft = Request("lora", ds.dataset_id(), "", 0);
  esft.set_base_version(lj.result_version());
  esft.mutable_hyperparameters()->set_max_steps(3);
  const v1::Job xj = RunJob(*server_, key, esft);
  ASSERT_EQ(xj.state(), v1::SUCCEEDED) << xj.error();
  EXPECT_EQ(GetVersion(*server_, key, "lora", xj.result_version()).method(), "esft");
  v1::CreateJobRequest bad = Request("lora", ds.dataset_id(), "lora", 2);
  bad.set_base_version(lj.result_version());
  bad.mutable_hyperparameters()->set_max_steps(2);
  const v1::Job bj = RunJob(*server_, key, bad);
  EXPECT_EQ(bj.state(), v1::FAILED);
  EXPECT_NE(bj.error().find("lora_rank"), std::string::npos) << bj.error();
}

TEST_F(LoraServiceTest, MethodAndRankAreValidatedNamingTheField) {
  const std::string key = server_->CreateTenant("valid");
  v1::Dataset ds;
  ASSERT_TRUE(server_->Upload(key, "valid", "add", AdditionJsonl(8), &ds).ok());
  struct Case {
    std::string method;
    int rank;
    std::string field;
  };
  for (const Case& k : {Case{"qlora", 0, "method"}, Case{"lora", -1, "lora_rank"}, Case{"lora", 100000, "lora_rank"},
                        Case{"esft", 4, "lora_rank"}}) {
    v1::Job job;
    const grpc::Status s =
        server_->FineTuning()->CreateJob(Ctx(key).get(), Request("valid", ds.dataset_id(), k.method, k.rank), &job);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << k.method << " " << k.rank;
    EXPECT_EQ(s.error_message().rfind(k.field, 0), 0u) << s.error_message();
  }
}

}  // namespace
}  // namespace tessera::services::testing
