#include "services/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "services/admin_service.h"
#include "services/blob_service.h"
#include "services/change_watcher.h"
#include "services/changes_service.h"
#include "services/control_plane_client.h"
#include "services/datasets_service.h"
#include "services/experts_service.h"
#include "services/fine_tuning_service.h"
#include "services/inference_service.h"
#include "services/log.h"
#include "services/memory_trim.h"
#include "services/remote_blob_store.h"
#include "storage/quota_refusal.h"

namespace tessera::services {

void RecordCall(const ServiceEnv& env, std::string_view method, absl::Time start, const absl::Status& s) {
  std::string code(absl::StatusCodeToString(s.code()));
  std::string m(method);
  env.metrics->Add(kRequestsMetric, {{"method", m}, {"code", code}});
  env.metrics->Observe(kLatencyMetric, {{"method", m}}, absl::ToDoubleSeconds(absl::Now() - start));
  if (std::optional<storage::QuotaRefusalInfo> q = storage::QuotaRefusalOf(s)) {
    env.metrics->Add(kQuotaRefusalsMetric, {{"tenant", q->tenant_id}, {"quota", q->quota}});
  }
  if (!s.ok()) {
    // Client errors at debug level would hide abuse; keep them at info, server faults at error.
    bool server_fault = s.code() == absl::StatusCode::kInternal || s.code() == absl::StatusCode::kUnknown ||
                        s.code() == absl::StatusCode::kDataLoss;
    Log(server_fault ? LogLevel::kError : LogLevel::kInfo, "rpc failed",
        {{"method", m}, {"code", code}, {"error", std::string(s.message())}});
  }
}

namespace {

std::string HostName() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

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

namespace {

absl::StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path, std::string_view marker) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(flag, " needs a PEM file"));
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat(flag, " ", path, ": cannot read (", strerror(errno), ")"));
  }
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0 && out.size() < (1 << 20)) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  if (out.find(marker) == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", path, ": not a PEM file with a ", std::string(marker.substr(11)), " block"));
  }
  return out;
}

bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost") return true;
  in_addr v4;
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6;
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;
}

}  // namespace

absl::Status CheckPlaintextListen(std::string_view flag, std::string_view address, bool allow_insecure) {
  if (allow_insecure) return absl::OkStatus();
  const std::string a(address);
  if (a.rfind("unix:", 0) == 0 || a.rfind("unix-abstract:", 0) == 0) return absl::OkStatus();
  std::string host;
  if (!a.empty() && a[0] == '[') {
    size_t close = a.find(']');
    host = close == std::string::npos ? "" : a.substr(1, close - 1);
  } else {
    size_t colon = a.rfind(':');
    host = colon == std::string::npos ? a : a.substr(0, colon);
  }
  if (IsLoopbackHost(host)) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      std::string(flag), " ", a, " is not a loopback address and the server has no TLS: API keys would cross the network ",
      "in plaintext. Give --tls-cert PEM --tls-key PEM (and --tls-client-ca PEM for mutual TLS), listen on "
      "127.0.0.1, or pass --allow-insecure if something else encrypts the traffic"));
}

absl::Status CheckTransportOptions(const ServerOptions& o) {
  const bool tls = !o.tls_cert_file.empty() || !o.tls_key_file.empty();
  if (tls) {
    if (o.tls_cert_file.empty()) return absl::InvalidArgumentError("--tls-key needs --tls-cert (the certificate chain)");
    if (o.tls_key_file.empty()) return absl::InvalidArgumentError("--tls-cert needs --tls-key (its private key)");
    if (absl::StatusOr<std::string> s = ReadPem("--tls-cert", o.tls_cert_file, "-----BEGIN CERTIFICATE"); !s.ok()) {
      return s.status();
    }
    if (absl::StatusOr<std::string> s = ReadPem("--tls-key", o.tls_key_file, "-----BEGIN "); !s.ok()) return s.status();
    if (!o.tls_client_ca_file.empty()) {
      if (absl::StatusOr<std::string> s = ReadPem("--tls-client-ca", o.tls_client_ca_file, "-----BEGIN CERTIFICATE");
          !s.ok()) {
        return s.status();
      }
    }
  } else {
    if (!o.tls_client_ca_file.empty()) {
      return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS)");
    }
    if (absl::Status s = CheckPlaintextListen("--listen", o.listen, o.allow_insecure); !s.ok()) return s;
  }
  // The HTTP API takes the same TLS as gRPC (mutual when a client CA is given), so without TLS the same
  // rule. The metrics endpoint is always plain HTTP (a Prometheus scraper beside the server, behind an
  // ADMIN key): loopback only unless --allow-insecure, TLS or not.
  if (!o.metrics_listen.empty()) {
    if (absl::Status s = CheckPlaintextListen("--metrics-listen", o.metrics_listen, o.allow_insecure); !s.ok()) return s;
  }
  if (!o.http_listen.empty() && !tls) {
    if (absl::Status s = CheckPlaintextListen("--http-listen", o.http_listen, o.allow_insecure); !s.ok()) return s;
  }
  return absl::OkStatus();
}

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
  metrics_.Describe(kQuotaRefusalsMetric, "counter",
                    "Calls refused with RESOURCE_EXHAUSTED over a tenant's quota, by tenant and quota "
                    "(requests_per_second, tokens_per_minute, max_queued_jobs, storage_bytes, max_versions).");
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
  metrics_.Describe("tessera_open_streams", "gauge",
                    "Open streams (GenerateStream, WatchJob, ExportVersion, HTTP SSE), bounded by --max-streams.");
  metrics_.Describe("tessera_runtime_tokens_generated_total", "counter",
                    "Tokens generated by the runtime since start (rate() = tokens/s).");
  metrics_.Describe("tessera_runtime_steps_total", "counter", "Batched decode/prefill steps run.");
  metrics_.Describe("tessera_runtime_batched_sequences_total", "counter",
                    "Sequences summed over steps (divided by steps = mean batch size).");
  metrics_.Describe("tessera_runtime_max_batch_size", "gauge", "Largest batch seen in one step.");
  metrics_.Describe("tessera_overlay_pool_slabs", "gauge",
                    "Preallocated expert-slot slabs for tenant versions (state=total|in_use).");
  metrics_.Describe("tessera_overlay_pool_overflow_slots_total", "counter",
                    "Tenant-version slots loaded outside the full slab pool (raise --overlay-device-bytes).");
  metrics_.Describe("tessera_overlay_tier_bytes", "gauge",
                    "Tenant-overlay bytes per tier (tier=device|host, state=used|limit; device held = evicted but "
                    "still used by running requests).");
  metrics_.Describe("tessera_overlay_tier_hits_total", "counter",
                    "Overlay acquisitions served by a tier (tier=device: resident; tier=host: promoted).");
  metrics_.Describe("tessera_overlay_tier_misses_total", "counter",
                    "Overlay acquisitions a tier could not serve (tier=host misses are disk loads).");
  metrics_.Describe("tessera_overlay_promotions_total", "counter", "Overlays moved host -> device.");
  metrics_.Describe("tessera_overlay_demotions_total", "counter", "Overlays moved device -> host on eviction.");
  metrics_.Describe("tessera_overlay_host_evictions_total", "counter",
                    "Overlays dropped from the host tier to disk (least recently used).");
  metrics_.Describe("tessera_overlay_loads_in_flight", "gauge", "Overlay promotions and disk loads running now.");
  metrics_.Describe("tessera_overlay_waiting_requests", "gauge",
                    "Generation requests waiting for their tenant overlay's load (not yet queued for a slot).");
  metrics_.Describe("tessera_kv_blocks", "gauge",
                    "Paged KV pool blocks (state=free|used), each of tessera_kv_block_tokens positions.");
  metrics_.Describe("tessera_kv_block_tokens", "gauge", "Positions per paged KV block (--kv-block-tokens).");
  metrics_.Describe("tessera_kv_preemptions_total", "counter",
                    "Requests preempted because the KV pool ran out (their blocks freed; they recompute later).");
  metrics_.Describe("tessera_kv_preempted_requests", "gauge", "Preempted requests waiting to be readmitted.");
  metrics_.Describe("tessera_prefix_cache_hits_total", "counter",
                    "Prompt blocks restored from the prefix cache instead of prefilled.");
  metrics_.Describe("tessera_prefix_cache_misses_total", "counter",
                    "Prompt blocks looked up in the prefix cache and not found (prefilled).");
  metrics_.Describe("tessera_prefix_cache_hit_tokens_total", "counter",
                    "Prompt tokens restored from the prefix cache (prefill skipped).");
  metrics_.Describe("tessera_prefix_cache_evictions_total", "counter",
                    "Prefix-cache blocks evicted (least recently used) to make room.");
  metrics_.Describe("tessera_prefix_cache_bytes", "gauge",
                    "Prefix-cache bytes (state=used|shared|limit; shared: of used, blocks running sequences "
                    "read too, stored once; limit 0: --prefix-cache-bytes off).");
  metrics_.Describe("tessera_live_follow_sequence", "gauge",
                    "Registry change sequence up to which live-pointer moves are served (vs. the registry's).");
  metrics_.Describe("tessera_heap_bytes", "gauge",
                    "malloc's heap (state=in_use: held by the program, mmap included; free: kept by malloc; "
                    "mmap: of in_use, served by mmap). in_use flat across jobs = no leak (services/memory_trim.h).");
  metrics_.Describe("tessera_process_resident_memory_bytes", "gauge", "Resident set size of the server.");
  metrics_.Describe("tessera_change_watch_connected", "gauge",
                    "Inference replicas: 1 while the control plane's change-feed stream is open (0: reading the "
                    "registry instead).");
  metrics_.Describe("tessera_change_watch_connects_total", "counter",
                    "Inference replicas: change-feed streams opened (1 + reconnections).");
  metrics_.Describe("tessera_tenant_deletions_followed_total", "counter",
                    "Replicas and trainers: tenants deleted on the control plane and forgotten here.");
  metrics_.Describe("tessera_blob_cache_pruned_total", "counter",
                    "Replicas and trainers: cached blobs deleted because no registry row references them.");
  metrics_.Describe("tessera_remote_blob_operations_total", "counter",
                    "Replicas and trainers: blob operations against the control plane's store "
                    "(op=cache_hit|fetch|upload|corrupt_dropped; fetches and uploads are sha256-verified).");
  metrics_.AddCollector([this](Metrics& m) {
    if (change_watcher_) {
      m.Set("tessera_change_watch_connected", {}, change_watcher_->connected() ? 1 : 0);
      m.Set("tessera_change_watch_connects_total", {}, static_cast<double>(change_watcher_->connects()));
    }
    if (sweeper_) {
      m.Set("tessera_tenant_deletions_followed_total", {}, static_cast<double>(sweeper_->tenants_forgotten()));
      m.Set("tessera_blob_cache_pruned_total", {}, static_cast<double>(sweeper_->cache_pruned()));
    }
    if (remote_blobs_) {
      const RemoteBlobStore::Stats st = remote_blobs_->stats();
      m.Set("tessera_remote_blob_operations_total", {{"op", "cache_hit"}}, static_cast<double>(st.cache_hits));
      m.Set("tessera_remote_blob_operations_total", {{"op", "fetch"}}, static_cast<double>(st.fetches));
      m.Set("tessera_remote_blob_operations_total", {{"op", "upload"}}, static_cast<double>(st.uploads));
      m.Set("tessera_remote_blob_operations_total", {{"op", "corrupt_dropped"}}, static_cast<double>(st.corrupt_dropped));
    }
    m.Set("tessera_up", {}, shutting_down_.load() ? 0 : 1);
    const HeapStats heap = CurrentHeapStats();
    m.Set("tessera_heap_bytes", {{"state", "in_use"}}, static_cast<double>(heap.in_use_bytes));
    m.Set("tessera_heap_bytes", {{"state", "free"}}, static_cast<double>(heap.free_bytes));
    m.Set("tessera_heap_bytes", {{"state", "mmap"}}, static_cast<double>(heap.mmap_bytes));
    m.Set("tessera_process_resident_memory_bytes", {}, static_cast<double>(heap.resident_bytes));
    if (streams_) m.Set("tessera_open_streams", {}, static_cast<double>(streams_->Counts().total));
    if (follower_) m.Set("tessera_live_follow_sequence", {}, static_cast<double>(follower_->cursor()));
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
      m.Set("tessera_runtime_tokens_generated_total", {}, es.tokens_generated);
      m.Set("tessera_runtime_steps_total", {}, static_cast<double>(es.steps));
      m.Set("tessera_runtime_batched_sequences_total", {}, static_cast<double>(es.batched_sequences));
      m.Set("tessera_runtime_max_batch_size", {}, static_cast<double>(es.max_batch_seen));
      m.Set("tessera_overlay_pool_slabs", {{"state", "total"}}, static_cast<double>(es.overlay_pool_slabs));
      m.Set("tessera_overlay_pool_slabs", {{"state", "in_use"}}, static_cast<double>(es.overlay_pool_slabs_in_use));
      m.Set("tessera_overlay_pool_overflow_slots_total", {}, static_cast<double>(es.overlay_pool_overflow_slots));
      m.Set("tessera_overlay_tier_bytes", {{"tier", "device"}, {"state", "used"}}, static_cast<double>(es.resident_bytes));
      m.Set("tessera_overlay_tier_bytes", {{"tier", "device"}, {"state", "held"}},
            static_cast<double>(es.overlay_held_bytes));
      m.Set("tessera_overlay_tier_bytes", {{"tier", "device"}, {"state", "limit"}},
            static_cast<double>(es.resident_bytes_limit));
      m.Set("tessera_overlay_tier_bytes", {{"tier", "host"}, {"state", "used"}}, static_cast<double>(es.overlay_host_bytes));
      m.Set("tessera_overlay_tier_bytes", {{"tier", "host"}, {"state", "limit"}},
            static_cast<double>(es.overlay_host_bytes_limit));
      m.Set("tessera_overlay_tier_hits_total", {{"tier", "device"}}, static_cast<double>(es.overlay_device_hits));
      m.Set("tessera_overlay_tier_hits_total", {{"tier", "host"}}, static_cast<double>(es.overlay_host_hits));
      m.Set("tessera_overlay_tier_misses_total", {{"tier", "device"}}, static_cast<double>(es.overlay_device_misses));
      m.Set("tessera_overlay_tier_misses_total", {{"tier", "host"}}, static_cast<double>(es.overlay_host_misses));
      m.Set("tessera_overlay_promotions_total", {}, static_cast<double>(es.overlay_promotions));
      m.Set("tessera_overlay_demotions_total", {}, static_cast<double>(es.overlay_demotions));
      m.Set("tessera_overlay_host_evictions_total", {}, static_cast<double>(es.overlay_host_evictions));
      m.Set("tessera_overlay_loads_in_flight", {}, static_cast<double>(es.overlay_loads_in_flight));
      m.Set("tessera_overlay_waiting_requests", {}, static_cast<double>(es.overlay_waiting_requests));
      m.Set("tessera_kv_blocks", {{"state", "free"}}, static_cast<double>(es.kv_blocks_free));
      m.Set("tessera_kv_blocks", {{"state", "used"}}, static_cast<double>(es.kv_blocks_total - es.kv_blocks_free));
      m.Set("tessera_kv_block_tokens", {}, static_cast<double>(es.kv_block_tokens));
      m.Set("tessera_kv_preemptions_total", {}, static_cast<double>(es.kv_preemptions));
      m.Set("tessera_kv_preempted_requests", {}, static_cast<double>(es.kv_preempted_waiting));
      m.Set("tessera_prefix_cache_hits_total", {}, static_cast<double>(es.prefix_cache_hit_blocks));
      m.Set("tessera_prefix_cache_misses_total", {}, static_cast<double>(es.prefix_cache_miss_blocks));
      m.Set("tessera_prefix_cache_hit_tokens_total", {}, static_cast<double>(es.prefix_cache_hit_tokens));
      m.Set("tessera_prefix_cache_evictions_total", {}, static_cast<double>(es.prefix_cache_evictions));
      m.Set("tessera_prefix_cache_bytes", {{"state", "used"}}, static_cast<double>(es.prefix_cache_bytes));
      m.Set("tessera_prefix_cache_bytes", {{"state", "shared"}}, static_cast<double>(es.prefix_cache_shared_bytes));
      m.Set("tessera_prefix_cache_bytes", {{"state", "limit"}}, static_cast<double>(es.prefix_cache_bytes_limit));
    }
  });
}

absl::StatusOr<std::unique_ptr<TesseraServer>> TesseraServer::Start(const ServerOptions& options,
                                                                    ServerComponents components) {
  if (options.data_dir.empty()) return absl::InvalidArgumentError("--data-dir is required");
  if (absl::Status st = CheckRoleOptions(options.role, options.registry.database, options.control_plane); !st.ok()) {
    return st;
  }
  if (absl::Status st = CheckTransportOptions(options); !st.ok()) return st;
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options.tls_cert_file.empty()) {
    grpc::SslServerCredentialsOptions tls(options.tls_client_ca_file.empty()
                                              ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                              : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    absl::StatusOr<std::string> cert = ReadPem("--tls-cert", options.tls_cert_file, "-----BEGIN CERTIFICATE");
    absl::StatusOr<std::string> key = ReadPem("--tls-key", options.tls_key_file, "-----BEGIN ");
    if (!cert.ok()) return cert.status();
    if (!key.ok()) return key.status();
    tls.pem_key_cert_pairs.push_back({*key, *cert});
    if (!options.tls_client_ca_file.empty()) {
      absl::StatusOr<std::string> ca = ReadPem("--tls-client-ca", options.tls_client_ca_file, "-----BEGIN CERTIFICATE");
      if (!ca.ok()) return ca.status();
      tls.pem_root_certs = *ca;
    }
    credentials = grpc::SslServerCredentials(tls);
  }
  // A replica or trainer keeps one channel to its control plane: the probe, blob transfer, the watch.
  std::shared_ptr<grpc::Channel> control_channel;
  std::shared_ptr<RemoteBlobStore> remote_blobs;
  storage::Registry::Options registry_options = options.registry;
  if (!RoleIsControlPlane(options.role)) {
    if (options.control_plane_key.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--role ", ServerRoleName(options.role),
                                                     " needs --control-plane-key-file FILE (an ADMIN key of the "
                                                     "control plane at ", options.control_plane, ")"));
    }
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
        ControlPlaneChannel(options.control_plane, options.control_plane_ca_file);
    if (!channel.ok()) return channel.status();
    control_channel = *std::move(channel);
    absl::StatusOr<v1::RuntimeStatus> cp = ProbeControlPlane(control_channel, options.control_plane,
                                                             options.control_plane_key, options.control_plane_wait);
    if (!cp.ok()) return cp.status();
    // It does not own the blobs: it reads and writes the control plane's over tessera.internal.v1.Blobs,
    // verified, through a cache in its own data dir (ARCHITECTURE.md, Scale-out: "fetch blobs by
    // digest"; services/remote_blob_store.h), so no volume is shared.
    if (registry_options.blob_backend == nullptr) {
      absl::StatusOr<std::unique_ptr<BlobClient>> client =
          BlobClient::Create(control_channel, options.control_plane, options.control_plane_key);
      if (!client.ok()) return client.status();
      const std::string cache_dir = options.data_dir + "/blob-cache";
      absl::StatusOr<std::unique_ptr<RemoteBlobStore>> remote = RemoteBlobStore::Create(*std::move(client), cache_dir);
      if (!remote.ok()) {
        return absl::Status(remote.status().code(),
                            absl::StrCat("the blob cache ", cache_dir, ": ", remote.status().message()));
      }
      remote_blobs = *std::move(remote);
      registry_options.blob_backend = remote_blobs;
    }
  }
  std::unique_ptr<TesseraServer> s(new TesseraServer());
  s->options_ = options;
  s->remote_blobs_ = remote_blobs;
  absl::StatusOr<std::unique_ptr<storage::Registry>> reg = storage::Registry::Open(options.data_dir, registry_options);
  if (!reg.ok()) {
    return absl::Status(reg.status().code(),
                        absl::StrCat("opening the registry in ", options.data_dir, ": ", reg.status().message()));
  }
  s->registry_ = *std::move(reg);
  // Read before the engine exists: every move after this point reaches the runtime through the
  // follower; anything older the runtime resolves from the registry when it first sees the tenant.
  absl::StatusOr<int64_t> start_seq = s->registry_->ChangeSequence();
  if (!start_seq.ok()) return start_seq.status();

  s->auth_ = std::make_unique<Authenticator>(s->registry_.get());
  storage::Registry* registry = s->registry_.get();
  s->rate_limiter_ = std::make_unique<RateLimiter>(
      [registry](const std::string& tenant) { return registry->GetQuotaLimits(tenant); },
      options.rate_limit_clock ? options.rate_limit_clock : RateLimiter::Clock([] { return absl::Now(); }));
  s->pool_ = std::make_unique<WorkPool>(options.work_threads, options.max_queued_per_tenant, options.admission);
  s->control_pool_ = std::make_unique<WorkPool>(std::max(1, options.control_threads));
  s->streams_ = std::make_unique<StreamLimiter>(options.max_streams, options.max_streams_per_tenant);
  // What the role leaves out is never built (a control plane loads no weights for serving).
  if (!RoleServesInference(options.role)) components.make_engine = nullptr;
  if (!RoleRunsJobs(options.role)) components.make_runner = nullptr;
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
  if (components.make_exporter) {
    absl::StatusOr<std::unique_ptr<VersionExporter>> x = components.make_exporter(s->registry_.get());
    if (!x.ok()) return x.status();
    s->exporter_ = *std::move(x);
  }
  s->live_ = std::make_unique<LiveControl>(s->registry_.get(), s->engine_.get(), components.backbone.sha256);
  if (s->engine_) {
    LiveFollower::Options fo;
    fo.poll = options.live_follow_poll;
    fo.on_applied = [srv = s.get()](int64_t) {
      if (srv->presence_) srv->presence_->Notify();
    };
    if (!RoleIsControlPlane(options.role)) {
      // A replica follows the control plane's watch stream (the registry while it is down).
      s->change_watcher_ = std::make_unique<ChangeWatcher>(control_channel, options.control_plane,
                                                           options.control_plane_key, s->registry_.get(), *start_seq);
    }
    s->follower_ = std::make_unique<LiveFollower>(s->registry_.get(), s->live_.get(), *start_seq, fo,
                                                  s->change_watcher_.get());
  }
  if (!RoleIsControlPlane(options.role)) {
    // The control plane applies its own tenant deletions (Admin.DeleteTenant); a follower learns of them
    // from the registry (services/tenant_sweeper.h).
    TenantSweeper::Options to;
    to.interval = options.tenant_sweep_interval;
    to.cache = s->remote_blobs_ ? &s->remote_blobs_->cache() : nullptr;
    to.on_deleted = [srv = s.get()](const std::string& tenant) {
      srv->live_->ForgetTenant(tenant);
      srv->auth_->ForgetTenant(tenant);
    };
    s->sweeper_ = std::make_unique<TenantSweeper>(s->registry_.get(), to);
  }
  s->gc_ = std::make_unique<BlobGc>(s->registry_.get(), &s->metrics_,
                                    BlobGc::Options{options.gc_interval, options.gc_grace});
  if (s->runner_) {
    JobScheduler::Options so;
    so.max_concurrent_jobs = options.max_concurrent_jobs * std::max(1, options.max_joint_jobs);
    so.lease = options.job_lease;
    so.heartbeat_interval = options.job_heartbeat;
    so.max_general_regression = options.max_general_regression;
    s->scheduler_ = std::make_unique<JobScheduler>(s->registry_.get(), s->runner_.get(), s->live_.get(),
                                                   &s->metrics_, so);
  }

  ServiceEnv& env = s->env_;
  env.registry = s->registry_.get();
  env.auth = s->auth_.get();
  env.metrics = &s->metrics_;
  env.pool = s->pool_.get();
  env.control_pool = s->control_pool_.get();
  env.streams = s->streams_.get();
  env.live = s->live_.get();
  env.engine = s->engine_.get();
  env.scheduler = s->scheduler_.get();
  env.exporter = s->exporter_.get();
  env.rate_limiter = s->rate_limiter_.get();
  env.validate_dataset = std::move(components.validate_dataset);
  env.backbone = components.backbone;
  env.max_dataset_bytes = options.max_dataset_bytes;
  env.started_at = absl::Now();
  env.server_version = "tessera 0.1.0 (API tessera.v1)";
  env.shutting_down = &s->shutting_down_;
  env.role = options.role;
  env.control_plane = options.control_plane;
  env.follower = s->follower_.get();
  if (!RoleIsControlPlane(options.role)) {
    // Its id and address are set once the port is bound (the default id names the port).
    ReplicaPresence::Options po;
    po.role = ServerRoleName(options.role);
    po.interval = options.replica_heartbeat;
    LiveFollower* follower = s->follower_.get();
    s->presence_ = std::make_unique<ReplicaPresence>(
        s->registry_.get(), po, [follower]() -> int64_t { return follower ? follower->cursor() : 0; });
    env.presence = s->presence_.get();
  }
  if (RoleIsControlPlane(options.role) && s->registry_->on_postgres()) {
    env.replica_wait = options.replica_wait;
    env.replica_fresh = options.replica_fresh;
  }

  s->admin_ = std::make_unique<AdminService>(env);
  // The blob service and the GC belong to the process that owns the blobs (role all or control: a
  // replica or trainer always has a blob_backend, and reaches the control plane's instead).
  if (storage::BlobStore* owned = s->registry_->owned_blobs(); owned != nullptr) {
    s->blobs_service_ = std::make_unique<BlobService>(env, owned);
  }
  if (RoleIsControlPlane(options.role)) s->changes_service_ = std::make_unique<ChangesService>(env);
  s->datasets_ = std::make_unique<DatasetsService>(env);
  s->experts_ = std::make_unique<ExpertsService>(env);
  s->fine_tuning_ = std::make_unique<FineTuningService>(env);
  s->inference_ = std::make_unique<InferenceService>(env);
  s->RegisterMetrics();

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, credentials, &s->port_);
  builder.SetMaxReceiveMessageSize(8 << 20);
  builder.RegisterService(s->admin_.get());
  if (s->blobs_service_) builder.RegisterService(s->blobs_service_.get());
  if (s->changes_service_) builder.RegisterService(s->changes_service_.get());
  builder.RegisterService(s->datasets_.get());
  builder.RegisterService(s->experts_.get());
  builder.RegisterService(s->fine_tuning_.get());
  builder.RegisterService(s->inference_.get());
  s->server_ = builder.BuildAndStart();
  if (!s->server_ || s->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("--listen ", options.listen,
                                               options.tls_cert_file.empty()
                                                   ? ": cannot bind (address in use or invalid?)"
                                                   : ": cannot bind (address in use or invalid, or the TLS "
                                                     "certificate and key do not match?)"));
  }
  if (auto* health = s->server_->GetHealthCheckService()) {
    health->SetServingStatus(true);
    for (const char* svc : {"tessera.v1.Admin", "tessera.v1.Datasets", "tessera.v1.Experts",
                            "tessera.v1.FineTuning", "tessera.v1.Inference"}) {
      health->SetServingStatus(svc, true);
    }
    if (!s->engine_) health->SetServingStatus("tessera.v1.Inference", false);
  }
  // An inference replica reports SERVING only once it serves every tenant's current live version.
  if (options.role == ServerRole::kInference) {
    auto* health = s->server_->GetHealthCheckService();
    if (health != nullptr) health->SetServingStatus(false);
    if (absl::Status st = s->PreloadLive(); !st.ok()) {
      s->Shutdown();
      return st;
    }
  }
  if (!options.metrics_listen.empty()) {
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> m =
        MetricsHttpServer::Start(options.metrics_listen, &s->metrics_, [auth = s->auth_.get()](std::string_view secret) {
          absl::StatusOr<storage::Principal> p = auth->AuthenticateSecret(secret);
          if (!p.ok()) return p.status();
          if (p->role != storage::Role::kAdmin) return absl::PermissionDeniedError("/metrics requires an ADMIN API key");
          return absl::OkStatus();
        });
    if (!m.ok()) {
      s->Shutdown();
      return m.status();
    }
    s->metrics_http_ = *std::move(m);
  }
  if (!options.http_listen.empty()) {
    absl::StatusOr<std::unique_ptr<http::HttpApiServer>> h =
        http::HttpApiServer::Start(http::HttpOptions{.listen = options.http_listen,
                                                     .tls_cert_file = options.tls_cert_file,
                                                     .tls_key_file = options.tls_key_file,
                                                     .tls_client_ca_file = options.tls_client_ca_file},
                                   &s->env_);
    if (!h.ok()) {
      s->Shutdown();
      return h.status();
    }
    s->http_ = *std::move(h);
  }
  // Last, so a start that fails (bad --device, port in use) does not create a key nobody saw. Only the
  // control plane bootstraps: replicas and trainers use the keys of the registry they share with it.
  if (RoleIsControlPlane(options.role)) {
    if (absl::Status st = s->Bootstrap(); !st.ok()) {
      s->Shutdown();
      return st;
    }
  }
  if (s->presence_) {
    std::string address = options.advertise;
    if (address.empty()) {
      std::string host = options.listen.substr(0, options.listen.rfind(':'));
      if (host.empty() || host == "0.0.0.0" || host == "[::]") host = HostName();
      address = absl::StrCat(host, ":", s->port_);
    }
    s->presence_->SetIdentity(
        options.replica_id.empty() ? absl::StrCat(HostName(), ":", s->port_) : options.replica_id, address);
    if (absl::Status st = s->presence_->Register(); !st.ok()) {
      s->Shutdown();
      return absl::Status(st.code(), absl::StrCat("registering in the registry's replica table: ", st.message()));
    }
    s->presence_->Start();
  }
  if (s->server_) {
    if (auto* health = s->server_->GetHealthCheckService(); health != nullptr && options.role == ServerRole::kInference) {
      health->SetServingStatus(true);
    }
  }
  if (s->scheduler_) s->scheduler_->Start();
  if (s->change_watcher_) s->change_watcher_->Start();
  if (s->follower_) s->follower_->Start();
  if (s->sweeper_) s->sweeper_->Start();
  // Blob GC is the control plane's housekeeping (one collector per registry, beside the blob store
  // that publishes write to), and only where this process owns the blobs.
  if (s->registry_->owned_blobs() != nullptr) s->gc_->Start();
  LogInfo("serving", {{"role", ServerRoleName(options.role)}, {"listen", options.listen}, {"port", s->port_}, {"data_dir", options.data_dir},
                      {"tls", options.tls_cert_file.empty() ? "off" : options.tls_client_ca_file.empty() ? "on" : "mutual"},
                      {"metrics_port", s->metrics_port()}, {"http_port", s->http_port()}, {"backbone", env.backbone.name},
                      {"inference", s->engine_ != nullptr}, {"training", s->scheduler_ != nullptr},
                      {"gc_interval_s", absl::ToDoubleSeconds(options.gc_interval)}});
  return s;
}

absl::Status TesseraServer::PreloadLive() {
  absl::StatusOr<std::vector<storage::Tenant>> tenants = registry_->ListTenants();
  if (!tenants.ok()) return tenants.status();
  int loaded = 0;
  for (const storage::Tenant& t : *tenants) {
    // A tenant whose version cannot be loaded now is logged, not fatal: the replica serves the others,
    // and that tenant's requests resolve its live version again when they come.
    if (absl::Status st = live_->Resync(t.tenant_id); !st.ok()) {
      LogError("replica start: could not load a tenant's live version",
               {{"tenant_id", t.tenant_id}, {"error", st.ToString()}});
      continue;
    }
    ++loaded;
  }
  LogInfo("replica start: live versions loaded", {{"tenants", loaded}});
  return absl::OkStatus();
}

void TesseraServer::Shutdown() {
  if (shutting_down_.exchange(true)) return;
  LogInfo("shutting down");
  if (server_) {
    if (auto* health = server_->GetHealthCheckService()) health->Shutdown();
  }
  if (http_) http_->Stop();  // before the engine and pool its handlers use
  if (follower_) follower_->Stop();
  if (change_watcher_) change_watcher_->Stop();
  if (sweeper_) sweeper_->Stop();
  if (presence_) presence_->Stop(/*deregister=*/true);
  if (gc_) gc_->Stop();
  if (scheduler_) scheduler_->Stop();
  if (changes_service_) changes_service_->Stop();  // wakes its watch streams, which then end (UNAVAILABLE)
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  if (pool_) pool_->Shutdown();
  if (control_pool_) control_pool_->Shutdown();
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
