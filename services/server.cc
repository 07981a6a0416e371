#include "services/server.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "services/admin_service.h"
#include "services/datasets_service.h"
#include "services/experts_service.h"
#include "services/fine_tuning_service.h"
#include "services/inference_service.h"
#include "services/log.h"

namespace tessera::services {

void RecordCall(const ServiceEnv& env, std::string_view method, absl::Time start, const absl::Status& s) {
  std::string code(absl::StatusCodeToString(s.code()));
  std::string m(method);
  env.metrics->Add(kRequestsMetric, {{"method", m}, {"code", code}});
  env.metrics->Observe(kLatencyMetric, {{"method", m}}, absl::ToDoubleSeconds(absl::Now() - start));
  if (!s.ok()) {
    // Client errors at debug level would hide abuse; keep them at info, server faults at error.
    bool server_fault = s.code() == absl::StatusCode::kInternal || s.code() == absl::StatusCode::kUnknown ||
                        s.code() == absl::StatusCode::kDataLoss;
    Log(server_fault ? LogLevel::kError : LogLevel::kInfo, "rpc failed",
        {{"method", m}, {"code", code}, {"error", std::string(s.message())}});
  }
}

namespace {

absl::Status WriteSecretFile(const std::string& path, const std::string& secret) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", strerror(errno)));
  std::string line = secret + "\n";
  bool ok = ::fchmod(fd, 0600) == 0 && ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
            ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot write ", path, ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status TesseraServer::Bootstrap() {
  bootstrap_.admin_key_path = options_.data_dir + "/admin.key";
  absl::StatusOr<int64_t> admins = registry_->CountActiveAdminKeys();
  if (!admins.ok()) return admins.status();
  if (*admins > 0) return absl::OkStatus();
  absl::StatusOr<storage::IssuedApiKey> key = registry_->CreateApiKey(storage::Role::kAdmin, "", "system");
  if (!key.ok()) return key.status();
  if (absl::Status s = WriteSecretFile(bootstrap_.admin_key_path, key->secret); !s.ok()) return s;
  bootstrap_.created_admin_key = true;
  bootstrap_.admin_key = key->secret;
  LogInfo("bootstrap: created the ADMIN key", {{"key_id", key->key.key_id},
                                                {"path", bootstrap_.admin_key_path}});
  return absl::OkStatus();
}

void TesseraServer::RegisterMetrics() {
  metrics_.Describe(kRequestsMetric, "counter", "RPCs finished, by method and status code.");
  metrics_.Describe(kLatencyMetric, "histogram", "RPC latency in seconds, by method.");
  metrics_.Describe("tessera_jobs", "gauge", "Fine-tuning jobs in the registry, by state.");
  metrics_.Describe("tessera_job_queue_depth", "gauge", "QUEUED fine-tuning jobs.");
  metrics_.Describe("tessera_jobs_running_here", "gauge", "Jobs this server's scheduler is running.");
  metrics_.Describe("tessera_generated_tokens_total", "counter", "Completion tokens generated, by tenant.");
  metrics_.Describe("tessera_prompt_tokens_total", "counter", "Prompt tokens processed, by tenant.");
  metrics_.Describe("tessera_expert_routed_tokens_total", "counter",
                    "Tokens routed to each expert slot in returned routing, by tenant (utilization).");
  metrics_.Describe("tessera_resident_versions", "gauge", "Tenant versions resident in the runtime.");
  metrics_.Describe("tessera_resident_bytes", "gauge", "Bytes of resident tenant versions.");
  metrics_.Describe("tessera_inference_pending", "gauge", "Generation requests waiting for a batch slot.");
  metrics_.Describe("tessera_inference_active", "gauge", "Generation requests in the running batch.");
  metrics_.Describe("tessera_up", "gauge", "1 while the server is serving.");
  metrics_.AddCollector([this](Metrics& m) {
    m.Set("tessera_up", {}, shutting_down_.load() ? 0 : 1);
    for (storage::JobState st : {storage::JobState::kQueued, storage::JobState::kRunning,
                                 storage::JobState::kSucceeded, storage::JobState::kFailed,
                                 storage::JobState::kCancelled}) {
      absl::StatusOr<int64_t> n = registry_->CountJobs("", st);
      if (!n.ok()) continue;
      m.Set("tessera_jobs", {{"state", std::string(storage::JobStateName(st))}}, static_cast<double>(*n));
      if (st == storage::JobState::kQueued) m.Set("tessera_job_queue_depth", {}, static_cast<double>(*n));
    }
    m.Set("tessera_jobs_running_here", {},
          scheduler_ ? static_cast<double>(scheduler_->RunningJobIds().size()) : 0);
    if (engine_) {
      EngineStatus es = engine_->Status();
      m.ClearFamily("tessera_resident_bytes");
      m.Set("tessera_resident_versions", {}, static_cast<double>(es.resident.size()));
      for (const ResidentVersionInfo& r : es.resident) {
        m.Set("tessera_resident_bytes", {{"tenant", r.tenant_id}, {"version", std::to_string(r.version)}},
              static_cast<double>(r.bytes));
      }
      m.Set("tessera_inference_pending", {}, static_cast<double>(es.pending_requests));
      m.Set("tessera_inference_active", {}, static_cast<double>(es.active_requests));
    }
  });
}

absl::StatusOr<std::unique_ptr<TesseraServer>> TesseraServer::Start(const ServerOptions& options,
                                                                    ServerComponents components) {
  if (options.data_dir.empty()) return absl::InvalidArgumentError("--data-dir is required");
  std::unique_ptr<TesseraServer> s(new TesseraServer());
  s->options_ = options;
  absl::StatusOr<std::unique_ptr<storage::Registry>> reg = storage::Registry::Open(options.data_dir, options.registry);
  if (!reg.ok()) {
    return absl::Status(reg.status().code(),
                        absl::StrCat("opening the registry in ", options.data_dir, ": ", reg.status().message()));
  }
  s->registry_ = *std::move(reg);

  s->auth_ = std::make_unique<Authenticator>(s->registry_.get());
  s->pool_ = std::make_unique<WorkPool>(options.work_threads);
  if (components.make_engine) {
    absl::StatusOr<std::unique_ptr<InferenceEngine>> e = components.make_engine(s->registry_.get());
    if (!e.ok()) return e.status();
    s->engine_ = *std::move(e);
    components.backbone = s->engine_->Backbone();  // with the loaded weights' digest
  }
  if (components.make_runner && options.run_jobs) {
    absl::StatusOr<std::unique_ptr<JobRunner>> r = components.make_runner(s->registry_.get());
    if (!r.ok()) return r.status();
    s->runner_ = *std::move(r);
  }
  s->live_ = std::make_unique<LiveControl>(s->registry_.get(), s->engine_.get());
  if (s->runner_) {
    JobScheduler::Options so;
    so.max_concurrent_jobs = options.max_concurrent_jobs;
    so.lease = options.job_lease;
    so.heartbeat_interval = options.job_heartbeat;
    s->scheduler_ = std::make_unique<JobScheduler>(s->registry_.get(), s->runner_.get(), s->live_.get(),
                                                   &s->metrics_, so);
  }

  ServiceEnv& env = s->env_;
  env.registry = s->registry_.get();
  env.auth = s->auth_.get();
  env.metrics = &s->metrics_;
  env.pool = s->pool_.get();
  env.live = s->live_.get();
  env.engine = s->engine_.get();
  env.scheduler = s->scheduler_.get();
  env.validate_dataset = std::move(components.validate_dataset);
  env.backbone = components.backbone;
  env.max_dataset_bytes = options.max_dataset_bytes;
  env.started_at = absl::Now();
  env.server_version = "tessera 0.1.0 (API tessera.v1)";
  env.shutting_down = &s->shutting_down_;

  s->admin_ = std::make_unique<AdminService>(env);
  s->datasets_ = std::make_unique<DatasetsService>(env);
  s->experts_ = std::make_unique<ExpertsService>(env);
  s->fine_tuning_ = std::make_unique<FineTuningService>(env);
  s->inference_ = std::make_unique<InferenceService>(env);
  s->RegisterMetrics();

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &s->port_);
  builder.SetMaxReceiveMessageSize(8 << 20);
  builder.RegisterService(s->admin_.get());
  builder.RegisterService(s->datasets_.get());
  builder.RegisterService(s->experts_.get());
  builder.RegisterService(s->fine_tuning_.get());
  builder.RegisterService(s->inference_.get());
  s->server_ = builder.BuildAndStart();
  if (!s->server_ || s->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("--listen ", options.listen,
                                               ": cannot bind (address in use or invalid?)"));
  }
  if (auto* health = s->server_->GetHealthCheckService()) {
    health->SetServingStatus(true);
    for (const char* svc : {"tessera.v1.Admin", "tessera.v1.Datasets", "tessera.v1.Experts",
                            "tessera.v1.FineTuning", "tessera.v1.Inference"}) {
      health->SetServingStatus(svc, true);
    }
    if (!s->engine_) health->SetServingStatus("tessera.v1.Inference", false);
  }
  if (!options.metrics_listen.empty()) {
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> m =
        MetricsHttpServer::Start(options.metrics_listen, &s->metrics_);
    if (!m.ok()) {
      s->Shutdown();
      return m.status();
    }
    s->metrics_http_ = *std::move(m);
  }
  // Last, so a start that fails (bad --device, port in use) does not create a key nobody saw.
  if (absl::Status st = s->Bootstrap(); !st.ok()) {
    s->Shutdown();
    return st;
  }
  if (s->scheduler_) s->scheduler_->Start();
  LogInfo("serving", {{"listen", options.listen}, {"port", s->port_}, {"data_dir", options.data_dir},
                      {"metrics_port", s->metrics_port()}, {"backbone", env.backbone.name},
                      {"inference", s->engine_ != nullptr}, {"training", s->scheduler_ != nullptr}});
  return s;
}

void TesseraServer::Shutdown() {
  if (shutting_down_.exchange(true)) return;
  LogInfo("shutting down");
  if (server_) {
    if (auto* health = server_->GetHealthCheckService()) health->Shutdown();
  }
  if (scheduler_) scheduler_->Stop();
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  if (pool_) pool_->Shutdown();
  if (metrics_http_) metrics_http_->Stop();
  {
    std::lock_guard<std::mutex> lock(done_mu_);
    done_ = true;
  }
  done_cv_.notify_all();
}

void TesseraServer::Wait() {
  std::unique_lock<std::mutex> lock(done_mu_);
  done_cv_.wait(lock, [this] { return done_; });
}

TesseraServer::~TesseraServer() {
  Shutdown();
  if (server_) server_->Wait();
  scheduler_.reset();
  engine_.reset();
  runner_.reset();
}

}  // namespace tessera::services
