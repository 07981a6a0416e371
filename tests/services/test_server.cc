#include "tests/services/test_server.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "core/backend/backend.h"
#include "core/model/overlay.h"
#include "gtest/gtest.h"
#include "services/model_host.h"
#include "services/job_spec.h"

namespace tessera::services::testing {

TestServer::TestServer(TestServerOptions options) : options_(std::move(options)) {
  if (options_.data_dir.empty()) {
    char tmpl[] = "/tmp/tessera_services_test_XXXXXX";
    char* dir = mkdtemp(tmpl);
    EXPECT_NE(dir, nullptr);
    options_.data_dir = dir;
    own_dir_ = true;
  }
  Start();
}

TestServer::~TestServer() {
  Stop();
  if (own_dir_) std::filesystem::remove_all(options_.data_dir);
}

void TestServer::Start() {
  ServerOptions so;
  so.data_dir = options_.data_dir;
  so.listen = "127.0.0.1:" + std::to_string(options_.port);
  so.max_dataset_bytes = options_.max_dataset_bytes;
  so.job_lease = options_.job_lease;
  so.job_heartbeat = options_.job_heartbeat;
  so.max_concurrent_jobs = options_.max_concurrent_jobs;
  so.max_joint_jobs = options_.max_joint_jobs;
  so.max_general_regression = options_.max_general_regression;
  so.work_threads = options_.work_threads;
  so.max_queued_per_tenant = options_.max_queued_per_tenant;
  so.max_streams = options_.max_streams;
  so.max_streams_per_tenant = options_.max_streams_per_tenant;
  so.run_jobs = options_.training || options_.make_runner != nullptr;
  so.gc_interval = options_.gc_interval;
  so.gc_grace = options_.gc_grace;
  so.live_follow_poll = options_.live_follow_poll;
  so.tenant_sweep_interval = options_.tenant_sweep_interval;
  so.registry.default_quotas = options_.default_quotas;
  so.rate_limit_clock = options_.rate_limit_clock;
  so.registry.blob_backend = options_.blob_backend;
  if (options_.metrics) so.metrics_listen = "127.0.0.1:0";
  if (options_.http) so.http_listen = "127.0.0.1:0";
  so.tls_cert_file = options_.tls_cert;
  so.tls_key_file = options_.tls_key;
  so.tls_client_ca_file = options_.tls_client_ca;
  so.role = options_.role;
  so.registry.database = options_.registry;
  so.control_plane = options_.control_plane;
  so.control_plane_key = options_.control_plane_key;
  so.control_plane_wait = absl::Seconds(10);
  so.replica_id = options_.replica_id;
  so.replica_wait = options_.replica_wait;
  so.replica_fresh = options_.replica_fresh;
  so.replica_heartbeat = options_.replica_heartbeat;
  if (!options_.share_blobs_with.empty() && !std::filesystem::exists(options_.data_dir + "/blobs")) {
    std::filesystem::create_directories(options_.share_blobs_with + "/blobs");
    std::filesystem::create_directory_symlink(options_.share_blobs_with + "/blobs", options_.data_dir + "/blobs");
  }
  CoreOptions co;
  co.backbone = options_.backbone;
  co.dtype = options_.dtype;
  co.max_context = options_.max_context;
  co.kv_memory_bytes = options_.kv_memory_bytes;
  co.prefix_cache_bytes = options_.prefix_cache_bytes;
  co.decode_routing = options_.decode_routing;
  co.train_memory_limit_bytes = options_.train_memory_limit_bytes;
  co.max_joint_jobs = options_.max_joint_jobs;
  co.general_eval_data = options_.general_eval_data;
  co.inference = options_.model;
  co.training = options_.training;
  co.on_step = options_.runtime_on_step;
  absl::StatusOr<ServerComponents> c = MakeCoreComponents(co);
  ASSERT_TRUE(c.ok()) << c.status();
  if (options_.make_runner) c->make_runner = options_.make_runner;
  if (options_.wrap_runner && c->make_runner) {
    c->make_runner = [inner = c->make_runner, wrap = options_.wrap_runner](
                         storage::Registry* r) -> absl::StatusOr<std::unique_ptr<JobRunner>> {
      absl::StatusOr<std::unique_ptr<JobRunner>> runner = inner(r);
      if (!runner.ok()) return runner.status();
      return wrap(*std::move(runner));
    };
  }
  if (options_.make_engine) c->make_engine = options_.make_engine;
  absl::StatusOr<std::unique_ptr<TesseraServer>> s = TesseraServer::Start(so, *std::move(c));
  ASSERT_TRUE(s.ok()) << s.status();
  server_ = *std::move(s);
  std::ifstream in(options_.data_dir + "/admin.key");
  std::getline(in, admin_key_);
  if (options_.tls_ca_for_clients.empty()) {
    channel_ = grpc::CreateChannel(address(), grpc::InsecureChannelCredentials());
  } else {
    auto read = [](const std::string& path) {
      std::ifstream f(path);
      return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    };
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = read(options_.tls_ca_for_clients);
    if (!options_.tls_client_cert.empty()) {
      tls.pem_cert_chain = read(options_.tls_client_cert);
      tls.pem_private_key = read(options_.tls_client_key);
    }
    channel_ = grpc::CreateChannel(address(), grpc::SslCredentials(tls));
  }
}

void TestServer::Stop() {
  if (server_) {
    server_->Shutdown();
    server_.reset();
  }
}

void TestServer::Restart() {
  Stop();
  Start();
}

std::unique_ptr<v1::Admin::Stub> TestServer::Admin() { return v1::Admin::NewStub(channel_); }
std::unique_ptr<v1::Datasets::Stub> TestServer::Datasets() { return v1::Datasets::NewStub(channel_); }
std::unique_ptr<v1::Experts::Stub> TestServer::Experts() { return v1::Experts::NewStub(channel_); }
std::unique_ptr<v1::FineTuning::Stub> TestServer::FineTuning() { return v1::FineTuning::NewStub(channel_); }
std::unique_ptr<v1::Inference::Stub> TestServer::Inference() { return v1::Inference::NewStub(channel_); }

std::unique_ptr<grpc::ClientContext> Ctx(const std::string& key) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!key.empty()) ctx->AddMetadata("authorization", "Bearer " + key);
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
  return ctx;
}

std::string TestServer::CreateTenant(const std::string& tenant_id) {
  v1::CreateTenantRequest req;
  req.set_tenant_id(tenant_id);
  req.set_display_name("Tenant " + tenant_id);
  v1::CreateTenantResponse resp;
  grpc::Status st = Admin()->CreateTenant(Ctx(admin_key_).get(), req, &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return resp.api_key().secret();
}

grpc::Status TestServer::Upload(const std::string& key, const std::string& tenant_id, const std::string& name,
                                const std::string& bytes, v1::Dataset* out, size_t chunk) {
  auto ctx = Ctx(key);
  auto stub = Datasets();
  auto writer = stub->UploadDataset(ctx.get(), out);
  v1::UploadDatasetRequest first;
  first.set_tenant_id(tenant_id);
  first.set_name(name);
  bool ok = writer->Write(first);
  for (size_t off = 0; ok && off < bytes.size(); off += chunk) {
    v1::UploadDatasetRequest r;
    r.set_chunk(bytes.substr(off, chunk));
    ok = writer->Write(r);
  }
  writer->WritesDone();
  return writer->Finish();
}

std::string AdditionJsonl(int n, int seed) {
  std::string out;
  uint64_t x = static_cast<uint64_t>(seed) * 2654435761u + 7;
  for (int i = 0; i < n; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    int a = static_cast<int>((x >> 33) % 50), b = static_cast<int>((x >> 17) % 50);
    out += "{\"prompt\": \"add(" + std::to_string(a) + "," + std::to_string(b) + ")=\", \"completion\": \"" +
           std::to_string(a + b) + "\"}\n";
  }
  return out;
}

int64_t PublishScaledVersion(storage::Registry& registry, const std::string& tenant,
                             const std::vector<std::pair<int, int>>& slots, float scale) {
  absl::StatusOr<std::unique_ptr<LoadedModel>> m = LoadModel("random:tiny", "cpu");
  EXPECT_TRUE(m.ok()) << m.status();
  std::vector<tessera::SlotId> ids;
  std::vector<services::SlotId> sids;
  for (auto [l, e] : slots) {
    ids.push_back({l, e});
    sids.push_back({l, e});
  }
  auto overlay = ExpertOverlay::CopyOfBase((*m)->model->config(), (*m)->model->weights(), ids,
                                           (*m)->backend.get());
  EXPECT_TRUE(overlay.ok()) << overlay.status();
  std::map<tessera::SlotId, ExpertWeights> w = (*overlay)->slots();
  for (auto& [slot, ew] : w) {
    for (Tensor* t : {&ew.gate, &ew.up, &ew.down}) {
      float* p = t->data<float>();
      for (int64_t i = 0; i < t->numel(); ++i) p[i] *= scale;
    }
  }
  auto scaled = ExpertOverlay::FromWeights((*m)->model->config(), w, (*m)->backend.get());
  EXPECT_TRUE(scaled.ok()) << scaled.status();
  absl::StatusOr<std::string> bytes = (*scaled)->Serialize();
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  absl::StatusOr<std::string> digest = registry.blobs().Put(*bytes);
  EXPECT_TRUE(digest.ok()) << digest.status();
  storage::NewVersion nv;
  nv.tenant_id = tenant;
  nv.slots_json = SlotsToJson(sids);
  nv.val_loss = 1.0;
  nv.base_val_loss = 2.0;
  nv.blob_digest = *digest;
  absl::StatusOr<storage::ExpertVersion> v = registry.PublishVersion(nv, "test");
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? v->version : -1;
}

}  // namespace tessera::services::testing
