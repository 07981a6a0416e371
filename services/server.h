// TesseraServer: one process serving every tessera.v1 service (plus reflection and grpc.health.v1),
// the job scheduler and the metrics endpoint, over one registry (data_dir).
//
// Start() opens (creating) the registry, builds the engine and the job runner through the given
// factories (either may be absent: the server then says so through UNAVAILABLE and GetRuntimeStatus),
// binds the port, and then bootstraps an ADMIN key when the registry has none (written to
// data_dir/admin.key, mode 0600; the secret is also returned once in bootstrap()). Shutdown() stops cleanly: no new
// claims, running jobs interrupted with their leases released for resumption, streams ended, in-flight
// unary calls finished.
//
// Background work besides the scheduler: a LiveFollower (when there is an engine) serves live-pointer
// moves that other processes make in the registry, following the change feed from the sequence the
// registry had when this server opened it; a BlobGc deletes unreferenced blobs every gc_interval.
//
// Besides the public tessera.v1 services, the gRPC port serves tessera.internal.v1.Blobs
// (services/blob_service.h, ADMIN keys only): the blob store, to replicas and trainers of the same
// deployment whose data dirs hold only a cache (services/remote_blob_store.h). A server whose registry
// reaches remote blobs (ServerOptions::registry.blob_backend: role inference or trainer) serves no blobs
// and runs no blob GC: both belong to the owner. The control plane also serves tessera.internal.v1.Changes
// (services/changes_service.h, ADMIN keys): the change feed pushed to its inference replicas, which
// follow it with services/change_watcher.h (the registry directly while it is unreachable).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/server.h"
#include "services/auth.h"
#include "services/inference_engine.h"
#include "services/job_runner.h"
#include "services/blob_gc.h"
#include "services/job_scheduler.h"
#include "services/live_control.h"
#include "services/live_follower.h"
#include "services/replicas.h"
#include "services/metrics.h"
#include "services/http/server.h"
#include "services/metrics_http.h"
#include "services/server_role.h"
#include "services/rate_limiter.h"
#include "services/service_env.h"
#include "services/version_exporter.h"
#include "services/stream_limiter.h"
#include "services/tenant_sweeper.h"
#include "services/work_pool.h"
#include "storage/registry.h"

namespace tessera::services {

class AdminService;
class BlobService;
class ChangesService;
class ChangeWatcher;
class RemoteBlobStore;
class DatasetsService;
class ExpertsService;
class FineTuningService;
class InferenceService;

struct ServerOptions {
  std::string data_dir;
  // Which part of the service this process runs (services/server_role.h). inference and trainer need
  // `control_plane` (HOST:PORT) and a PostgreSQL registry shared with it (CheckRoleOptions).
  ServerRole role = ServerRole::kAll;
  std::string control_plane;
  // inference/trainer: an ADMIN key of the control plane (--control-plane-key-file) and, when it serves
  // TLS, the CA that signed its certificate (--control-plane-ca). Start checks that `control_plane`
  // answers Admin.GetRuntimeStatus as --role control or all, retrying for control_plane_wait.
  std::string control_plane_key;
  std::string control_plane_ca_file;
  absl::Duration control_plane_wait = absl::Seconds(60);
  // inference/trainer: this process's row in the registry's replica table (services/replicas.h):
  // its id (empty: HOSTNAME:PORT), the address written there (empty: the --listen host, or the host
  // name for a wildcard host, with the bound port) and the heartbeat interval.
  std::string replica_id;
  std::string advertise;
  absl::Duration replica_heartbeat = absl::Seconds(1);
  // all/control on PostgreSQL: how long Promote/Rollback wait for the inference replicas, and how
  // young a replica's heartbeat must be for it to count (ServiceEnv::replica_wait / replica_fresh).
  absl::Duration replica_wait = absl::Seconds(10);
  absl::Duration replica_fresh = absl::Seconds(5);
  std::string listen = "127.0.0.1:7070";  // port 0: pick a free one (see port())
  std::string metrics_listen;             // empty: no metrics endpoint
  std::string http_listen;                // empty: no HTTP API (OpenAI-compatible, services/http/)
  int max_concurrent_jobs = 1;
  // Jobs per training loop (CoreOptions::max_joint_jobs): the scheduler claims up to
  // max_concurrent_jobs * max_joint_jobs jobs at once, so that many can train together.
  int max_joint_jobs = 1;
  double max_general_regression = -1;  // the promotion gate's default bound; < 0: none (JobScheduler::Options)
  int64_t max_dataset_bytes = 64 << 20;
  absl::Duration job_lease = absl::Seconds(30);
  absl::Duration job_heartbeat = absl::Seconds(5);
  // Executors (work_pool.h): `work_threads` run inference (Generate, Score) and dataset stores, taking
  // waiting work round-robin across tenants (`admission` kFifo: arrival order), at most
  // `max_queued_per_tenant` waiting per tenant (more: RESOURCE_EXHAUSTED); `control_threads` run
  // Promote, Rollback and DeleteTenant, so those never wait behind inference.
  int work_threads = 16;
  int control_threads = 4;
  int64_t max_queued_per_tenant = 64;
  runtime::AdmissionPolicy admission = runtime::AdmissionPolicy::kFair;
  // Open streams (GenerateStream, WatchJob, ExportVersion, HTTP SSE completions): per tenant and in
  // total; beyond -> RESOURCE_EXHAUSTED (stream_limiter.h). <= 0: unbounded.
  int64_t max_streams = 256;
  int64_t max_streams_per_tenant = 32;
  bool run_jobs = true;  // false: jobs are accepted and queued but never claimed by this process
  absl::Duration gc_interval = absl::Minutes(5);  // <= 0: no periodic blob GC
  absl::Duration gc_grace = absl::Minutes(10);    // unreferenced blobs younger than this are kept
  absl::Duration live_follow_poll = absl::Milliseconds(250);  // longest wait per change-feed round
  // Followers (role inference|trainer): how often the registry's tenant list is checked for tenants
  // deleted on the control plane (services/tenant_sweeper.h).
  absl::Duration tenant_sweep_interval = absl::Seconds(2);
  storage::Registry::Options registry;
  // TLS for the gRPC and HTTP listeners (PEM files). With tls_client_ca_file: mutual TLS, a client must
  // present a certificate that CA signed. Without TLS the listeners must be loopback unless
  // allow_insecure; the metrics listener is always plain HTTP, so loopback unless allow_insecure.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  bool allow_insecure = false;
  // The clock of the requests/s and tokens/min buckets (services/rate_limiter.h); unset: absl::Now.
  // Tests set a fake one so that no assertion depends on how fast the machine runs.
  RateLimiter::Clock rate_limit_clock;
};

// OK when `address` (HOST:PORT, [V6]:PORT or unix:PATH) is only reachable from this machine (127/8,
// ::1, localhost, a unix socket), or when allow_insecure; else FAILED_PRECONDITION naming `flag`, the
// address and the two ways out (--tls-cert/--tls-key, or --allow-insecure).
absl::Status CheckPlaintextListen(std::string_view flag, std::string_view address, bool allow_insecure);

// The transport checks TesseraServer::Start makes before opening anything (tessera-server runs them
// before loading a model): TLS files readable and PEM-looking, cert and key given together, a client CA
// only with them, and plaintext listeners on loopback unless allow_insecure. INVALID_ARGUMENT /
// NOT_FOUND / FAILED_PRECONDITION naming the flag.
absl::Status CheckTransportOptions(const ServerOptions& options);

// What the server is built from besides the registry. The factories receive the opened registry.
struct ServerComponents {
  BackboneInfo backbone;
  DatasetValidator validate_dataset;
  std::function<absl::StatusOr<std::unique_ptr<InferenceEngine>>(storage::Registry*)> make_engine;
  std::function<absl::StatusOr<std::unique_ptr<JobRunner>>(storage::Registry*)> make_runner;
  // Experts.ExportVersion (absent: UNAVAILABLE).
  std::function<absl::StatusOr<std::unique_ptr<VersionExporter>>(storage::Registry*)> make_exporter;
};

struct BootstrapInfo {
  bool created_admin_key = false;
  std::string admin_key_path;  // data_dir/admin.key
  std::string admin_key;       // the secret, only when created now
};

class TesseraServer {
 public:
  static absl::StatusOr<std::unique_ptr<TesseraServer>> Start(const ServerOptions& options,
                                                              ServerComponents components);
  ~TesseraServer();

  int port() const { return port_; }
  int metrics_port() const { return metrics_http_ ? metrics_http_->port() : 0; }
  int http_port() const { return http_ ? http_->port() : 0; }
  const BootstrapInfo& bootstrap() const { return bootstrap_; }
  // What is served (the engine's view once it is built: dtype, context, tokenizer; else the config's).
  const BackboneInfo& backbone() const { return env_.backbone; }
  // What the handlers share (the HTTP fuzz target serves requests over it without a listener).
  const ServiceEnv& env() const { return env_; }
  storage::Registry& registry() { return *registry_; }
  Metrics& metrics() { return metrics_; }
  // Null when the server has no engine (nothing to keep in step).
  LiveFollower* live_follower() { return follower_.get(); }
  // Null unless --role inference|trainer.
  ReplicaPresence* presence() { return presence_.get(); }
  BlobGc& blob_gc() { return *gc_; }

  void Shutdown();
  // Blocks until Shutdown() is called from another thread.
  void Wait();

 private:
  TesseraServer() = default;
  absl::Status Bootstrap();
  // --role inference, before reporting SERVING: serve every tenant's current live version.
  absl::Status PreloadLive();
  void RegisterMetrics();

  ServerOptions options_;
  BootstrapInfo bootstrap_;
  std::atomic<bool> shutting_down_{false};
  Metrics metrics_;
  std::unique_ptr<storage::Registry> registry_;
  std::shared_ptr<RemoteBlobStore> remote_blobs_;  // the registry's blobs on a follower; null where owned
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<RateLimiter> rate_limiter_;
  std::unique_ptr<WorkPool> pool_;
  std::unique_ptr<WorkPool> control_pool_;
  std::unique_ptr<StreamLimiter> streams_;
  std::unique_ptr<InferenceEngine> engine_;
  std::unique_ptr<JobRunner> runner_;
  std::unique_ptr<VersionExporter> exporter_;
  std::unique_ptr<LiveControl> live_;
  std::unique_ptr<JobScheduler> scheduler_;
  std::unique_ptr<ChangeWatcher> change_watcher_;  // inference replicas: the control plane's feed
  std::unique_ptr<LiveFollower> follower_;
  std::unique_ptr<TenantSweeper> sweeper_;  // followers (role inference|trainer) only
  std::unique_ptr<ReplicaPresence> presence_;
  std::unique_ptr<BlobGc> gc_;
  ServiceEnv env_;
  std::unique_ptr<AdminService> admin_;
  std::unique_ptr<BlobService> blobs_service_;  // tessera.internal.v1.Blobs (services/blob_service.h)
  std::unique_ptr<ChangesService> changes_service_;  // tessera.internal.v1.Changes (control plane)
  std::unique_ptr<DatasetsService> datasets_;
  std::unique_ptr<ExpertsService> experts_;
  std::unique_ptr<FineTuningService> fine_tuning_;
  std::unique_ptr<InferenceService> inference_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsHttpServer> metrics_http_;
  std::unique_ptr<http::HttpApiServer> http_;
  int port_ = 0;
  std::mutex done_mu_;
  std::condition_variable done_cv_;
  bool done_ = false;
};

// Ends the calls' RecordCall metrics family names, for tests and dashboards.
inline constexpr char kRequestsMetric[] = "tessera_rpc_requests_total";
inline constexpr char kLatencyMetric[] = "tessera_rpc_latency_seconds";
// Calls refused over a quota (storage/quota_refusal.h), by tenant and quota.
inline constexpr char kQuotaRefusalsMetric[] = "tessera_quota_refusals_total";

}  // namespace tessera::services
