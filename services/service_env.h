// ServiceEnv: what every gRPC service handler shares (owned by TesseraServer), plus the helpers that
// finish a call: record its metrics (requests and latency per RPC and code), log failures, and map
// absl::Status to grpc::Status.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "services/auth.h"
#include "services/backbone_info.h"
#include "services/inference_engine.h"
#include "services/live_control.h"
#include "services/metrics.h"
#include "services/server_role.h"
#include "services/status_util.h"
#include "services/stream_limiter.h"
#include "services/version_exporter.h"
#include "services/work_pool.h"
#include "storage/registry.h"

namespace tessera::services {

class JobScheduler;
class LiveFollower;
class ReplicaPresence;
class RateLimiter;

// Validates a whole dataset upload and counts it with the backbone's tokenizer.
struct DatasetStats {
  int64_t num_examples = 0;
  int64_t num_tokens = 0;
  int64_t num_loss_tokens = 0;  // completions + EOS (the auto rule's completion length)
};
using DatasetValidator = std::function<absl::StatusOr<DatasetStats>(std::string_view bytes)>;

struct ServiceEnv {
  storage::Registry* registry = nullptr;
  Authenticator* auth = nullptr;
  Metrics* metrics = nullptr;
  WorkPool* pool = nullptr;          // inference and other long handler work, fair across tenants
  WorkPool* control_pool = nullptr;  // Promote, Rollback, DeleteTenant: never behind inference
  StreamLimiter* streams = nullptr;  // open streams per tenant and in total (null: unbounded)
  LiveControl* live = nullptr;
  InferenceEngine* engine = nullptr;    // null: the server runs without inference (UNAVAILABLE)
  JobScheduler* scheduler = nullptr;    // null: jobs queue but are not run here
  VersionExporter* exporter = nullptr;  // null: ExportVersion is UNAVAILABLE
  RateLimiter* rate_limiter = nullptr;  // null: no requests/s or tokens/min quotas (services/rate_limiter.h)
  DatasetValidator validate_dataset;
  BackboneInfo backbone;
  int64_t max_dataset_bytes = 64 << 20;
  int64_t max_generate_tokens = 1024;
  absl::Time started_at;
  std::string server_version;
  std::atomic<bool>* shutting_down = nullptr;
  // tessera-server --role (services/server_role.h); and, on inference and trainer processes, the control
  // plane's HOST:PORT (--control-plane).
  ServerRole role = ServerRole::kAll;
  std::string control_plane;
  ReplicaPresence* presence = nullptr;   // this process's row in the registry's replica table (null: none)
  LiveFollower* follower = nullptr;      // null: no engine to keep in step
  // Control plane on a shared (PostgreSQL) registry: Promote/Rollback wait up to replica_wait for every
  // inference replica with a heartbeat younger than replica_fresh to serve the move
  // (services/replicas.h). Zero: no wait (SQLite: no replica can share the registry).
  absl::Duration replica_wait = absl::ZeroDuration();
  absl::Duration replica_fresh = absl::Seconds(5);
};

// Registry mutations (tenants, keys, datasets, jobs, live pointers, backups) are served by the control
// plane only: on an inference replica or a trainer they are UNAVAILABLE naming the control plane's
// address, so a client that reached the wrong process knows where to go (they are not forwarded: one
// process answers for every mutation, and its audit trail shows which). OK on --role all|control.
inline absl::Status RequireControlPlane(const ServiceEnv& env, std::string_view what) {
  if (RoleIsControlPlane(env.role)) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat(std::string(what), ": registry changes are made on the control plane at ",
                                             env.control_plane, "; this process runs --role ",
                                             ServerRoleName(env.role)));
}

// Why Generate/Score/the HTTP completions are UNAVAILABLE on a server without an engine.
inline absl::Status InferenceUnavailable(const ServiceEnv& env) {
  if (!RoleServesInference(env.role)) {
    return absl::UnavailableError(absl::StrCat("inference is not served by this --role ", ServerRoleName(env.role),
                                               " process: send Generate/Score to an inference replica"));
  }
  return absl::UnavailableError("inference is not available on this server (no model runtime loaded)");
}

// Records one finished call: tessera_rpc_requests_total{method,code} and tessera_rpc_latency_seconds.
void RecordCall(const ServiceEnv& env, std::string_view method, absl::Time start, const absl::Status& s);

// Finishes a unary call with `s` (OK or an error), recording it.
inline grpc::ServerUnaryReactor* FinishUnary(const ServiceEnv& env, grpc::CallbackServerContext* ctx,
                                             std::string_view method, absl::Time start,
                                             const absl::Status& s) {
  RecordCall(env, method, start, s);
  AddRetryAfterTrailer(*ctx, s);
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  r->Finish(ToGrpcStatus(s));
  return r;
}

// Runs `work` (returning absl::Status; it fills the response) on `pool` (default: the inference pool)
// under `key` (the tenant: the pool takes keys round-robin) and finishes the call from there. For
// handlers that may block for long. A key whose queue is full finishes RESOURCE_EXHAUSTED at once.
template <typename Work>
grpc::ServerUnaryReactor* RunOnPool(const ServiceEnv& env, grpc::CallbackServerContext* ctx,
                                    std::string_view method, Work work, WorkPool* pool = nullptr,
                                    const std::string& key = "") {
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  absl::Time start = absl::Now();
  const ServiceEnv* e = &env;
  std::string m(method);
  if (pool == nullptr) pool = env.pool;
  bool queued = pool->TrySubmit(key, [e, r, ctx, m, start, work = std::move(work)]() mutable {
    absl::Status s = work();
    RecordCall(*e, m, start, s);
    AddRetryAfterTrailer(*ctx, s);
    r->Finish(ToGrpcStatus(s));
  });
  if (!queued) {
    absl::Status s = absl::ResourceExhaustedError(absl::StrCat(
        m, ": tenant '", key, "' already has the most requests waiting for a server thread "
        "(--max-queued-per-tenant); retry when some have finished"));
    RecordCall(env, m, start, s);
    r->Finish(ToGrpcStatus(s));
  }
  return r;
}

// The same on the control pool (admin work that must not wait behind inference).
template <typename Work>
grpc::ServerUnaryReactor* RunOnControlPool(const ServiceEnv& env, grpc::CallbackServerContext* ctx,
                                           std::string_view method, Work work) {
  return RunOnPool(env, ctx, method, std::move(work), env.control_pool != nullptr ? env.control_pool : env.pool);
}

// A stream's place under the stream limits (stream_limiter.h), held until the last copy is destroyed;
// null when the server sets no limits. RESOURCE_EXHAUSTED over a limit.
inline absl::StatusOr<std::shared_ptr<StreamSlot>> AcquireStreamSlot(const ServiceEnv& env,
                                                                     const std::string& tenant, const char* kind) {
  if (env.streams == nullptr) return std::shared_ptr<StreamSlot>();
  absl::StatusOr<StreamSlot> s = env.streams->Acquire(tenant, kind);
  if (!s.ok()) return s.status();
  return std::make_shared<StreamSlot>(*std::move(s));
}

// A server-streaming reactor that finishes at once with an error (refused before any thread is made:
// malformed, unauthenticated, or over the stream limits).
template <typename Message>
class RejectedWriter : public grpc::ServerWriteReactor<Message> {
 public:
  RejectedWriter(const ServiceEnv& env, std::string_view method, const absl::Status& s) {
    RecordCall(env, method, absl::Now(), s);
    this->Finish(ToGrpcStatus(s));
  }
  void OnDone() override { delete this; }
};

// A server-streaming reactor whose body runs on its own thread and writes synchronously:
// Write() blocks until the message is sent and returns false once the client is gone. The body's
// returned status finishes the call. Used for WatchJob and GenerateStream.
template <typename Message>
class ThreadedWriter : public grpc::ServerWriteReactor<Message> {
 public:
  using Body = std::function<absl::Status(ThreadedWriter*)>;

  ThreadedWriter(const ServiceEnv& env, std::string method, Body body)
      : env_(env), method_(std::move(method)), start_(absl::Now()) {
    // Held until thread_ is assigned, so OnDone never sees an unassigned thread_.
    std::lock_guard<std::mutex> lock(mu_);
    thread_ = std::thread([this, body = std::move(body)]() mutable {
      { std::lock_guard<std::mutex> wait_for_constructor(mu_); }
      absl::Status s = body(this);
      body = nullptr;  // what it held (a stream slot) is released before the client sees the end
      if (cancelled()) s = absl::CancelledError("the client cancelled the call");
      RecordCall(env_, method_, start_, s);
      this->Finish(ToGrpcStatus(s));
    });
  }

  bool Write(const Message& m) {
    std::unique_lock<std::mutex> lock(mu_);
    if (cancelled_) return false;
    write_pending_ = true;
    write_ok_ = false;
    this->StartWrite(&m);
    cv_.wait(lock, [this] { return !write_pending_; });
    return write_ok_ && !cancelled_;
  }
  bool cancelled() {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_;
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    write_pending_ = false;
    write_ok_ = ok;
    if (!ok) cancelled_ = true;
    cv_.notify_all();
  }
  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    cv_.notify_all();
  }
  void OnDone() override {
    // Finish() was the body thread's last use of `this`; it may run OnDone inline.
    if (thread_.get_id() == std::this_thread::get_id()) {
      thread_.detach();
    } else {
      thread_.join();
    }
    delete this;
  }

 private:
  const ServiceEnv& env_;
  std::string method_;
  absl::Time start_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool write_pending_ = false;
  bool write_ok_ = false;
  bool cancelled_ = false;
  std::thread thread_;
};

}  // namespace tessera::services
