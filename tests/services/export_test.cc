// Versions leave the service as checkpoints, on a real server (builtin:tiny) on loopback:
// - a full export, re-loaded by Tessera's own checkpoint loader, computes bitwise the log-probs the
//   backbone computes with the tenant's overlay, and the server's Score of that version agrees;
// - overlay-only exports hold the version's blob byte for byte plus its manifest;
// - a tenant exports only its own versions; version 0 is the base checkpoint;
// - a version trained on another backbone (recorded in the registry, or only in its blob's metadata for
//   rows older than the column) cannot be promoted, rolled back to, pinned, served, fine-tuned from or
//   merged:
//   FAILED_PRECONDITION naming both digests; a digest nobody knows is not refused;
// - `tessera versions export` end to end (files and their sha256, non-empty --out refused).
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "core/io/checkpoint.h"
#include "core/model/overlay.h"
#include "core/train/backbone.h"
#include "core/util/sha256.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "services/checkpoint_exporter.h"
#include "services/job_spec.h"
#include "services/model_host.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {
namespace fs = std::filesystem;

std::string Slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The stream of one ExportVersion call, written into `dir` while checking its framing (contiguous
// offsets, per-file sha256 and size, the final listing).
struct Exported {
  grpc::Status status;
  std::map<std::string, std::string> sha256;  // path -> sha256 from the stream
};

Exported ExportInto(TestServer& server, const std::string& key, const std::string& tenant, int64_t version,
                    bool overlay_only, int64_t max_shard_bytes, const fs::path& dir) {
  fs::create_directories(dir);
  v1::ExportVersionRequest req;
  req.set_tenant_id(tenant);
  req.set_version(version);
  req.set_overlay_only(overlay_only);
  req.set_max_shard_bytes(max_shard_bytes);
  auto ctx = Ctx(key);
  auto stub = server.Experts();
  auto reader = stub->ExportVersion(ctx.get(), req);
  Exported out;
  v1::ExportChunk c;
  std::string current, bytes;
  bool listed = false;
  while (reader->Read(&c)) {
    EXPECT_FALSE(listed) << "message after the listing";
    if (c.path().empty()) {
      EXPECT_TRUE(current.empty());
      listed = true;
      EXPECT_EQ(static_cast<size_t>(c.files_size()), out.sha256.size());
      for (const v1::ExportedFile& f : c.files()) EXPECT_EQ(out.sha256[f.path()], f.sha256()) << f.path();
      continue;
    }
    if (current.empty()) {
      current = c.path();
      bytes.clear();
    }
    EXPECT_EQ(c.path(), current);
    EXPECT_EQ(c.offset(), static_cast<int64_t>(bytes.size())) << current;
    EXPECT_LE(c.data().size(), size_t{1} << 20);
    bytes += c.data();
    if (c.eof()) {
      EXPECT_EQ(c.sha256(), Sha256Hex(bytes)) << current;
      EXPECT_EQ(c.size_bytes(), static_cast<int64_t>(bytes.size())) << current;
      std::ofstream(dir / current, std::ios::binary) << bytes;
      out.sha256[current] = c.sha256();
      current.clear();
    }
  }
  out.status = reader->Finish();
  if (out.status.ok()) {
    EXPECT_TRUE(listed);
  }
  return out;
}

class ExportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    TestServerOptions o;
    o.model = true;
    o.backbone = "builtin:tiny";
    server_ = new TestServer(o);
    auto m = LoadModel("builtin:tiny", "cpu");
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = m->release();
    v1::RuntimeStatus status;
    ASSERT_TRUE(server_->Admin()->GetRuntimeStatus(Ctx(server_->admin_key()).get(), {}, &status).ok());
    backbone_sha_ = status.backbone().sha256();
    ASSERT_EQ(backbone_sha_.size(), 64u);
  }
  static void TearDownTestSuite() {
    delete server_;
    delete model_;
    server_ = nullptr;
    model_ = nullptr;
  }
  void SetUp() override {
    char tmpl[] = "/tmp/tessera_export_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    tmp_ = tmpl;
  }
  void TearDown() override { fs::remove_all(tmp_); }

  // The base experts of `slots` scaled by `scale`, as the blob a trainer would write. `column_sha` goes
  // to the registry row; `metadata_sha` (when set) to the blob's backbone_sha256 metadata.
  static std::string OverlayBlob(const std::vector<std::pair<int, int>>& slots, float scale,
                                 const std::string& metadata_sha) {
    std::vector<tessera::SlotId> ids;
    for (auto [l, e] : slots) ids.push_back({l, e});
    auto overlay = ExpertOverlay::CopyOfBase(model_->model->config(), model_->model->weights(), ids,
                                             model_->backend.get());
    EXPECT_TRUE(overlay.ok()) << overlay.status();
    std::map<tessera::SlotId, ExpertWeights> w = (*overlay)->slots();
    for (auto& [slot, ew] : w) {
      for (Tensor* t : {&ew.gate, &ew.up, &ew.down}) {
        float* p = t->data<float>();
        for (int64_t i = 0; i < t->numel(); ++i) p[i] = p[i] * scale + 1e-3f * static_cast<float>(i % 7);
      }
    }
    auto scaled = ExpertOverlay::FromWeights(model_->model->config(), w, model_->backend.get());
    EXPECT_TRUE(scaled.ok()) << scaled.status();
    std::map<std::string, std::string> meta;
    if (!metadata_sha.empty()) meta["backbone_sha256"] = metadata_sha;
    return (*scaled)->Serialize(meta).value();
  }
  static int64_t Publish(const std::string& tenant, const std::vector<std::pair<int, int>>& slots, float scale,
                         const std::string& column_sha, const std::string& metadata_sha) {
    absl::StatusOr<std::string> digest = server_->registry().blobs().Put(OverlayBlob(slots, scale, metadata_sha));
    EXPECT_TRUE(digest.ok()) << digest.status();
    std::vector<services::SlotId> sids;
    for (auto [l, e] : slots) sids.push_back({l, e});
    storage::NewVersion nv;
    nv.tenant_id = tenant;
    nv.slots_json = SlotsToJson(sids);
    nv.val_loss = 1.5;
    nv.base_val_loss = 2.5;
    nv.blob_digest = *digest;
    nv.backbone_sha256 = column_sha;
    absl::StatusOr<storage::ExpertVersion> v = server_->registry().PublishVersion(nv, "test");
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? v->version : -1;
  }

  // Per-token log-probs of `text` (BOS + bytes) on `model` with `overlay`.
  static std::vector<float> LogProbs(const Model& model, const ExpertOverlay* overlay, const std::string& text) {
    std::vector<int32_t> ids = {256};
    for (unsigned char ch : text) ids.push_back(ch);
    SequenceInput in{ids, overlay, nullptr};
    auto lp = model.ScoreTokens(absl::MakeConstSpan(&in, 1));
    EXPECT_TRUE(lp.ok()) << lp.status();
    return lp.ok() ? (*lp)[0] : std::vector<float>{};
  }

  static TestServer* server_;
  static LoadedModel* model_;
  static std::string backbone_sha_;
  fs::path tmp_;
};

TestServer* ExportTest::server_ = nullptr;
LoadedModel* ExportTest::model_ = nullptr;
std::string ExportTest::backbone_sha_;

constexpr char kText[] = "secret(qyvah)=vwmpm and more text";

TEST_F(ExportTest, FullExportReloadedByTesseraComputesWhatTheTenantsVersionServes) {
  const std::string key = server_->CreateTenant("full");
  const std::vector<std::pair<int, int>> slots = {{0, 1}, {2, 5}, {3, 15}};
  const int64_t v = Publish("full", slots, 1.7f, backbone_sha_, backbone_sha_);
  Exported e = ExportInto(*server_, key, "full", v, false, 3'000'000, tmp_ / "ckpt");
  ASSERT_TRUE(e.status.ok()) << e.status.error_message();
  EXPECT_TRUE(e.sha256.count("model.safetensors.index.json"));
  EXPECT_TRUE(e.sha256.count("model-00001-of-00003.safetensors"));
  EXPECT_TRUE(e.sha256.count("config.json"));
  EXPECT_TRUE(e.sha256.count("generation_config.json"));
  EXPECT_EQ(Slurp(tmp_ / "ckpt" / "config.json"), Slurp(fs::path(model_->backbone->dir) / "config.json"));
  auto gen = nlohmann::json::parse(Slurp(tmp_ / "ckpt" / "generation_config.json"));
  EXPECT_EQ(gen["eos_token_id"], 257);
  EXPECT_EQ(gen["bos_token_id"], 256);

  // Tessera's own loader reads the export; without any overlay it computes what the backbone computes
  // with the version's overlay: bitwise (same f32 values, same math).
  auto backend = MakeBackend("cpu");
  ASSERT_TRUE(backend.ok()) << backend.status();
  absl::StatusOr<train::Backbone> loaded = train::LoadBackbone((tmp_ / "ckpt").string(), backend->get());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->config, model_->model->config());
  auto exported = Model::Create(loaded->config, loaded->weights, backend->get());
  ASSERT_TRUE(exported.ok()) << exported.status();
  auto blob = server_->registry().blobs().Get(server_->registry().GetVersion("full", v).value().sha256);
  ASSERT_TRUE(blob.ok());
  auto overlay = ExpertOverlay::FromSafetensors(model_->model->config(), *blob, model_->backend.get());
  ASSERT_TRUE(overlay.ok()) << overlay.status();
  std::vector<float> want = LogProbs(*model_->model, overlay->get(), kText);
  std::vector<float> got = LogProbs(**exported, nullptr, kText);
  EXPECT_EQ(got, want);
  EXPECT_NE(LogProbs(*model_->model, nullptr, kText), want);  // the overlay matters for this text

  // The server's Score of the pinned version agrees with the export.
  v1::ScoreRequest sr;
  sr.set_tenant_id("full");
  sr.set_text(kText);
  sr.set_version(v);
  v1::ScoreResponse score;
  ASSERT_TRUE(server_->Inference()->Score(Ctx(key).get(), sr, &score).ok());
  double sum = 0;
  for (float x : got) sum += x;
  EXPECT_NEAR(score.total_logprob(), sum, 1e-4 * std::abs(sum));
  EXPECT_EQ(score.expert_version(), v);
}

TEST_F(ExportTest, VersionZeroIsTheBaseCheckpointAndOverlayOnlyHoldsTheVersion) {
  const std::string key = server_->CreateTenant("plain");
  Exported base = ExportInto(*server_, key, "plain", 0, false, 0, tmp_ / "base");
  ASSERT_TRUE(base.status.ok()) << base.status.error_message();
  ASSERT_TRUE(base.sha256.count("model.safetensors"));  // default shard size: one file
  EXPECT_FALSE(base.sha256.count("model.safetensors.index.json"));
  auto a = io::Checkpoint::Open((tmp_ / "base").string()).value();
  auto b = io::Checkpoint::Open(model_->backbone->dir).value();
  ASSERT_EQ(a->names(), b->names());
  for (const std::string& n : b->names()) {
    auto x = a->RawBytes(n).value();
    auto y = b->RawBytes(n).value();
    ASSERT_EQ(std::string(x.begin(), x.end()), std::string(y.begin(), y.end())) << n;
  }

  const int64_t v = Publish("plain", {{1, 2}, {1, 9}}, 0.5f, backbone_sha_, backbone_sha_);
  const storage::ExpertVersion row = server_->registry().GetVersion("plain", v).value();
  Exported o = ExportInto(*server_, key, "plain", v, true, 0, tmp_ / "overlay");
  ASSERT_TRUE(o.status.ok()) << o.status.error_message();
  ASSERT_EQ(o.sha256.size(), 2u);
  EXPECT_EQ(o.sha256["overlay.safetensors"], row.sha256);  // the stored blob, byte for byte
  auto m = nlohmann::json::parse(Slurp(tmp_ / "overlay" / "manifest.json"));
  EXPECT_EQ(m["format"], "tessera-overlay-export-v1");
  EXPECT_EQ(m["tenant_id"], "plain");
  EXPECT_EQ(m["version"], v);
  EXPECT_EQ(m["parent_version"], 0);
  EXPECT_EQ(m["backbone_sha256"], backbone_sha_);
  EXPECT_EQ(m["weights_sha256"], row.sha256);
  EXPECT_EQ(m["slots"], nlohmann::json::parse(R"([{"layer":1,"expert":2},{"layer":1,"expert":9}])"));
  EXPECT_DOUBLE_EQ(m["metrics"]["val_loss"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ(m["metrics"]["base_val_loss"].get<double>(), 2.5);

  // GetVersion shows the digest.
  v1::GetVersionRequest gr;
  gr.set_tenant_id("plain");
  gr.set_version(v);
  v1::ExpertVersion ev;
  ASSERT_TRUE(server_->Experts()->GetVersion(Ctx(key).get(), gr, &ev).ok());
  EXPECT_EQ(ev.backbone_sha256(), backbone_sha_);

  // Bad requests.
  EXPECT_EQ(ExportInto(*server_, key, "plain", 0, true, 0, tmp_ / "x").status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ExportInto(*server_, key, "plain", -1, false, 0, tmp_ / "x").status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ExportInto(*server_, key, "plain", v, false, -5, tmp_ / "x").status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // Nothing is left behind in the server's export work dir.
  EXPECT_TRUE(fs::is_empty(server_->data_dir() + "/export"));
}

TEST_F(ExportTest, ATenantExportsOnlyItsOwnVersions) {
  const std::string owner = server_->CreateTenant("owner");
  const std::string other = server_->CreateTenant("other");
  const int64_t v = Publish("owner", {{0, 0}}, 2.0f, backbone_sha_, backbone_sha_);
  // The other tenant has no such version: NOT_FOUND, whatever the mode; naming the owner: refused.
  for (bool overlay_only : {false, true}) {
    Exported e = ExportInto(*server_, other, "other", v, overlay_only, 0, tmp_ / "o");
    EXPECT_EQ(e.status.error_code(), grpc::StatusCode::NOT_FOUND) << e.status.error_message();
    EXPECT_EQ(e.status.error_message().find("owner"), std::string::npos) << e.status.error_message();
    EXPECT_TRUE(e.sha256.empty());
    EXPECT_EQ(ExportInto(*server_, other, "owner", v, overlay_only, 0, tmp_ / "o").status.error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  EXPECT_EQ(ExportInto(*server_, "", "owner", v, true, 0, tmp_ / "o").status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // The admin may export for any tenant; an unknown tenant is NOT_FOUND.
  EXPECT_TRUE(ExportInto(*server_, server_->admin_key(), "owner", v, true, 0, tmp_ / "a").status.ok());
  EXPECT_EQ(ExportInto(*server_, server_->admin_key(), "nobody", 0, false, 0, tmp_ / "n").status.error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(ExportTest, AVersionOfAnotherBackboneIsRefusedNamingBothDigests) {
  const std::string key = server_->CreateTenant("moved");
  const std::string foreign(64, 'f');
  const int64_t good = Publish("moved", {{0, 3}}, 1.2f, backbone_sha_, backbone_sha_);
  const int64_t recorded = Publish("moved", {{0, 3}}, 1.3f, foreign, foreign);  // column says so
  const int64_t legacy = Publish("moved", {{0, 3}}, 1.4f, "", foreign);         // only the blob says so
  const int64_t unknown = Publish("moved", {{0, 3}}, 1.5f, "", "");             // nobody knows
  auto expect_refused = [&](const grpc::Status& st, int64_t v, const std::string& what) {
    EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << what << " v" << v << ": " << st.error_message();
    EXPECT_NE(st.error_message().find(foreign), std::string::npos) << what << ": " << st.error_message();
    EXPECT_NE(st.error_message().find(backbone_sha_), std::string::npos) << what << ": " << st.error_message();
  };
  auto promote = [&](int64_t v) {
    v1::PromoteRequest r;
    r.set_tenant_id("moved");
    r.set_version(v);
    v1::LiveVersionResponse resp;
    return server_->Admin()->Promote(Ctx(server_->admin_key()).get(), r, &resp);
  };
  auto generate = [&](std::optional<int64_t> v) {
    v1::GenerateRequest r;
    r.set_tenant_id("moved");
    r.set_prompt("abc");
    r.set_max_tokens(2);
    if (v.has_value()) r.set_version(*v);
    v1::GenerateResponse resp;
    return server_->Inference()->Generate(Ctx(key).get(), r, &resp);
  };
  ASSERT_TRUE(promote(good).ok());
  v1::Dataset ds;
  ASSERT_TRUE(server_->Upload(key, "moved", "d", AdditionJsonl(20), &ds).ok());
  for (int64_t v : {recorded, legacy}) {
    v1::CreateJobRequest jr;
    jr.set_tenant_id("moved");
    jr.set_training_dataset_id(ds.dataset_id());
    jr.set_base_version(v);
    v1::Job job;
    expect_refused(server_->FineTuning()->CreateJob(Ctx(key).get(), jr, &job), v, "fine-tune from");
    expect_refused(promote(v), v, "promote");
    v1::RollbackRequest rb;
    rb.set_tenant_id("moved");
    rb.set_to_version(v);
    v1::LiveVersionResponse resp;
    expect_refused(server_->Admin()->Rollback(Ctx(server_->admin_key()).get(), rb, &resp), v, "rollback");
    expect_refused(generate(v), v, "generate");
    v1::ScoreRequest sr;
    sr.set_tenant_id("moved");
    sr.set_text("abc");
    sr.set_version(v);
    v1::ScoreResponse score;
    expect_refused(server_->Inference()->Score(Ctx(key).get(), sr, &score), v, "score");
    expect_refused(ExportInto(*server_, key, "moved", v, false, 0, tmp_ / "x").status, v, "export");
    // The overlay alone can still leave, with the digest it was trained on.
    fs::remove_all(tmp_ / "o");
    ASSERT_TRUE(ExportInto(*server_, key, "moved", v, true, 0, tmp_ / "o").status.ok());
    EXPECT_EQ(nlohmann::json::parse(Slurp(tmp_ / "o" / "manifest.json"))["backbone_sha256"], foreign);
  }
  // Nothing moved: the good version is still live and served.
  EXPECT_EQ(server_->registry().GetLive("moved").value(), good);
  v1::GenerateRequest r;
  r.set_tenant_id("moved");
  r.set_prompt("abc");
  r.set_max_tokens(2);
  v1::GenerateResponse resp;
  ASSERT_TRUE(server_->Inference()->Generate(Ctx(key).get(), r, &resp).ok());
  EXPECT_EQ(resp.expert_version(), good);
  // The legacy row shows the digest its blob carries.
  v1::ListVersionsRequest lr;
  lr.set_tenant_id("moved");
  v1::ListVersionsResponse list;
  ASSERT_TRUE(server_->Experts()->ListVersions(Ctx(key).get(), lr, &list).ok());
  for (const v1::ExpertVersion& ev : list.versions()) {
    EXPECT_EQ(ev.backbone_sha256(), ev.version() == good ? backbone_sha_ : ev.version() == unknown ? "" : foreign)
        << ev.version();
  }
  // A digest nobody knows proves nothing: served.
  EXPECT_TRUE(generate(unknown).ok());
  ASSERT_TRUE(promote(unknown).ok());

  // Serving: a mismatched version made live behind this server's back (another process, an older
  // binary) is refused when the server serves the tenant's live version after a restart.
  ASSERT_TRUE(server_->registry().Promote("moved", recorded, "test").ok());
  server_->Restart();
  grpc::Status st = generate(std::nullopt);
  expect_refused(st, recorded, "serve live");
  ASSERT_TRUE(promote(good).ok());
  EXPECT_TRUE(generate(std::nullopt).ok());
}

TEST_F(ExportTest, ExporterBoundsConcurrentExportsAndSweepsStaleDirectories) {
  server_->CreateTenant("busy");
  const fs::path work = tmp_ / "work";
  fs::create_directories(work / "export-old");
  fs::create_directories(work / "export-young");
  fs::create_directories(work / "unrelated");
  fs::last_write_time(work / "export-old", fs::file_time_type::clock::now() - std::chrono::hours(48));
  fs::last_write_time(work / "unrelated", fs::file_time_type::clock::now() - std::chrono::hours(48));
  std::shared_ptr<const SharedBackbone> backbone = model_->backbone;
  CheckpointExporter::Options o;
  o.work_dir = work.string();
  o.max_concurrent = 1;
  auto x = CheckpointExporter::Create(
      &server_->registry(), [backbone]() -> absl::StatusOr<std::shared_ptr<const SharedBackbone>> { return backbone; },
      o);
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_FALSE(fs::exists(work / "export-old"));
  EXPECT_TRUE(fs::exists(work / "export-young"));
  EXPECT_TRUE(fs::exists(work / "unrelated"));

  ExportRequest r;
  r.tenant_id = "busy";
  r.version = 0;
  auto first = (*x)->Export(r);
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string first_dir = (*first)->path();
  EXPECT_TRUE(fs::exists(fs::path(first_dir) / "config.json"));
  // While the first is held (being streamed), a second is refused; a failed one frees its slot.
  EXPECT_EQ((*x)->Export(r).status().code(), absl::StatusCode::kResourceExhausted);
  first->reset();
  EXPECT_FALSE(fs::exists(first_dir));
  r.version = Publish("busy", {{0, 0}}, 1.1f, std::string(64, 'e'), "");
  EXPECT_EQ((*x)->Export(r).status().code(), absl::StatusCode::kFailedPrecondition);  // after taking the slot
  r.version = 0;
  EXPECT_TRUE((*x)->Export(r).ok());
  // Every export directory is gone once released, failed ones included.
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(work)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"export-young", "unrelated"}));
}

TEST_F(ExportTest, CliExportWritesVerifiedFilesAndRefusesANonEmptyDirectory) {
  const std::string key = server_->CreateTenant("cli");
  const int64_t v = Publish("cli", {{2, 2}}, 1.1f, backbone_sha_, backbone_sha_);
  const std::string bin = absl::StrCat(std::getenv("TESSERA_BINARY_DIR") != nullptr ? std::getenv("TESSERA_BINARY_DIR")
                                                                                     : TESSERA_DEFAULT_BINARY_DIR,
                                       "/services/tessera");
  auto run = [&](const std::vector<std::string>& args, std::string* out) {
    std::string cmd = absl::StrCat("env TESSERA_API_KEY=", Quote(key), " TESSERA_TENANT=cli ", Quote(bin),
                                   " --server ", server_->address());
    for (const std::string& a : args) absl::StrAppend(&cmd, " ", Quote(a));
    absl::StrAppend(&cmd, " >", (tmp_ / "cli.out").string(), " 2>", (tmp_ / "cli.err").string());
    int rc = std::system(cmd.c_str());
    *out = Slurp(tmp_ / "cli.out") + Slurp(tmp_ / "cli.err");
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  };
  std::string out;
  const fs::path dir = tmp_ / "ckpt";
  ASSERT_EQ(run({"versions", "export", "--version", std::to_string(v), "--out", dir.string(), "--max-shard-bytes",
                 "4000000"},
                &out),
            0)
      << out;
  EXPECT_NE(out.find("model.safetensors.index.json"), std::string::npos) << out;
  EXPECT_NE(out.find(absl::StrCat("of version ", v)), std::string::npos) << out;
  // Progress on stderr while it runs, and the end.
  EXPECT_NE(Slurp(tmp_ / "cli.err").find(absl::StrCat("export version ", v, ": ")), std::string::npos) << out;
  EXPECT_NE(Slurp(tmp_ / "cli.err").find("files received, sha256 checked"), std::string::npos) << out;
  // Every file it wrote is listed with its sha256, and nothing else is in the directory.
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    ++files;
    EXPECT_NE(out.find(Sha256FileHex(entry.path().string()).value()), std::string::npos) << entry.path();
  }
  EXPECT_GE(files, 5);
  ASSERT_TRUE(io::Checkpoint::Open(dir.string()).ok());

  // A non-empty --out is refused (usage error) and left alone.
  EXPECT_EQ(run({"versions", "export", "--version", std::to_string(v), "--out", dir.string()}, &out), 2) << out;
  EXPECT_NE(out.find("not empty"), std::string::npos) << out;
  // An existing empty directory is fine; --overlay-only; --json lists the files.
  fs::create_directories(tmp_ / "empty");
  ASSERT_EQ(run({"--json", "versions", "export", "--version", std::to_string(v), "--out", (tmp_ / "empty").string(),
                 "--overlay-only"},
                &out),
            0)
      << out;
  auto listing = nlohmann::json::parse(Slurp(tmp_ / "cli.out"));
  EXPECT_EQ(listing["files"].size(), 2u);
  EXPECT_TRUE(fs::exists(tmp_ / "empty" / "manifest.json"));
  // A failed export leaves nothing behind.
  EXPECT_EQ(run({"versions", "export", "--version", "99", "--out", (tmp_ / "missing").string()}, &out), 1) << out;
  EXPECT_NE(out.find("NOT_FOUND"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(tmp_ / "missing"));
  for (const auto& entry : fs::directory_iterator(tmp_)) {
    EXPECT_EQ(entry.path().filename().string().find(".partial-"), std::string::npos) << entry.path();
  }
  EXPECT_EQ(run({"versions", "export", "--out", (tmp_ / "y").string()}, &out), 2) << out;
  EXPECT_NE(out.find("--version"), std::string::npos) << out;
}

}  // namespace
}  // namespace tessera::services::testing
