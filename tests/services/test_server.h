// A real TesseraServer for tests: a fresh registry in a temp dir, 127.0.0.1 port 0, optionally the
// random:tiny model (inference + training), and helpers to call it with a given API key.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "grpcpp/grpcpp.h"
#include "services/core_components.h"
#include "services/server.h"
#include "tessera/v1/admin.grpc.pb.h"
#include "tessera/v1/datasets.grpc.pb.h"
#include "tessera/v1/experts.grpc.pb.h"
#include "tessera/v1/fine_tuning.grpc.pb.h"
#include "tessera/v1/inference.grpc.pb.h"

namespace tessera::services::testing {

struct TestServerOptions {
  bool model = false;     // load the backbone (random:tiny unless `backbone` says otherwise) for inference
  std::string backbone = "random:tiny";  // tessera-server --backbone
  bool training = false;  // run jobs (needs nothing else: the runner loads its own model)
  std::string dtype = "f32";  // the backbone's weight matrices (tessera-server --dtype)
  int64_t max_context = 0;    // tessera-server --max-context (0: the model's)
  int64_t kv_memory_bytes = runtime::kDefaultKvMemoryBytes;  // tessera-server --kv-memory-bytes
  int64_t prefix_cache_bytes = 0;                               // tessera-server --prefix-cache-bytes
  std::string decode_routing = "host";  // tessera-server --decode-routing
  int64_t train_memory_limit_bytes = 0;  // tessera-server --train-memory-limit-bytes
  std::string general_eval_data;         // tessera-server --general-eval-data
  double max_general_regression = -1;    // tessera-server --max-general-regression (< 0: none)
  std::string data_dir;   // empty: a fresh temp dir
  int port = 0;           // 0: any free port
  storage::QuotaLimits default_quotas;  // tessera-server --default-* quota flags (here all 0 = unlimited)
  std::function<absl::Time()> rate_limit_clock;  // ServerOptions::rate_limit_clock (unset: absl::Now)
  // Set: the server's blobs live elsewhere (a replica or trainer: storage::Registry::Options::blob_backend).
  std::shared_ptr<storage::BlobBackend> blob_backend;
  int64_t max_dataset_bytes = 1 << 20;
  absl::Duration job_lease = absl::Seconds(30);
  absl::Duration job_heartbeat = absl::Seconds(1);
  int max_concurrent_jobs = 1;
  int max_joint_jobs = 1;  // tessera-server --max-joint-jobs
  bool metrics = false;  // serve /metrics on 127.0.0.1:0 (see server().metrics_port())
  bool http = false;     // serve the HTTP API on 127.0.0.1:0 (see server().http_port())
  absl::Duration gc_interval = absl::ZeroDuration();  // periodic blob GC off unless a test asks
  absl::Duration gc_grace = absl::Minutes(10);
  absl::Duration live_follow_poll = absl::Milliseconds(250);
  absl::Duration tenant_sweep_interval = absl::Milliseconds(100);  // ServerOptions::tenant_sweep_interval
  // TLS (tessera-server --tls-cert/--tls-key/--tls-client-ca) and what the test's own channel presents:
  // the CA it trusts (set: a TLS channel) and a client certificate for mutual TLS.
  std::string tls_cert, tls_key, tls_client_ca;
  std::string tls_ca_for_clients, tls_client_cert, tls_client_key;
  // Set: this engine serves inference instead of the model (for admission/executor tests).
  std::function<absl::StatusOr<std::unique_ptr<InferenceEngine>>(storage::Registry*)> make_engine;
  int work_threads = 24;              // tessera-server --inference-threads
  int64_t max_queued_per_tenant = 64; // tessera-server --max-queued-per-tenant
  int64_t max_streams = 256;          // tessera-server --max-streams
  int64_t max_streams_per_tenant = 32;  // tessera-server --max-streams-per-tenant
  // Scale-out (tessera-server --role, --registry, --control-plane; services/server_role.h).
  ServerRole role = ServerRole::kAll;
  std::string registry;  // Registry::Options::database ("" = SQLite in the data dir)
  std::string control_plane, control_plane_key;
  std::string replica_id;
  absl::Duration replica_wait = absl::Seconds(10);
  absl::Duration replica_fresh = absl::Seconds(5);
  absl::Duration replica_heartbeat = absl::Seconds(1);
  // Non-empty: this server's data_dir/blobs is a symlink to that data dir's blobs (processes sharing
  // one blob store).
  std::string share_blobs_with;
  // Set: jobs run on this runner instead of the real trainer (for scheduler behaviour tests).
  std::function<absl::StatusOr<std::unique_ptr<JobRunner>>(storage::Registry*)> make_runner;
  // The model's runtime calls this after every step (RuntimeOptions::on_step: a test may block in it to
  // hold the scheduler at an exact step).
  std::function<void(const runtime::StepInfo&)> runtime_on_step;
  // Set: wraps the runner jobs run on (the real trainer or make_runner's), e.g. to hold a job at a point
  // the test chooses (checkpoint_gate.h) instead of racing it.
  std::function<std::unique_ptr<JobRunner>(std::unique_ptr<JobRunner>)> wrap_runner;
};

inline TestServerOptions WithModel() {
  TestServerOptions o;
  o.model = true;
  return o;
}

class TestServer {
 public:
  explicit TestServer(TestServerOptions options = {});
  ~TestServer();

  void Restart();  // Shutdown and start again on the same data dir
  void Stop();

  const std::string& data_dir() const { return options_.data_dir; }
  std::string address() const { return "127.0.0.1:" + std::to_string(server_->port()); }
  TesseraServer& server() { return *server_; }
  storage::Registry& registry() { return server_->registry(); }
  const std::string& admin_key() const { return admin_key_; }

  std::unique_ptr<v1::Admin::Stub> Admin();
  std::unique_ptr<v1::Datasets::Stub> Datasets();
  std::unique_ptr<v1::Experts::Stub> Experts();
  std::unique_ptr<v1::FineTuning::Stub> FineTuning();
  std::unique_ptr<v1::Inference::Stub> Inference();
  std::shared_ptr<grpc::Channel> channel() { return channel_; }

  // Creates a tenant through the Admin API and returns its first API key.
  std::string CreateTenant(const std::string& tenant_id);
  // Uploads JSONL bytes as tenant's dataset; returns the status and fills `out`.
  grpc::Status Upload(const std::string& key, const std::string& tenant_id, const std::string& name,
                      const std::string& bytes, v1::Dataset* out, size_t chunk = 1000);

 private:
  void Start();
  TestServerOptions options_;
  bool own_dir_ = false;
  std::unique_ptr<TesseraServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::string admin_key_;
};

// A context with `authorization: Bearer <key>` (no metadata when key is empty) and a 300 s deadline
// (generous: WatchJob waits for a whole training run, which a loaded 2-core machine makes slow).
std::unique_ptr<grpc::ClientContext> Ctx(const std::string& key);

// n lines of {"prompt": "add(a,b)=", "completion": "<a+b>"} (deterministic).
std::string AdditionJsonl(int n, int seed = 1);

// Publishes a version for `tenant` directly in the registry: the base experts of `slots`, each scaled
// by `scale` (so its outputs differ from the base's), as a safetensors blob. Returns the version.
int64_t PublishScaledVersion(storage::Registry& registry, const std::string& tenant,
                             const std::vector<std::pair<int, int>>& slots, float scale);

}  // namespace tessera::services::testing
