// tessera.internal.v1.Changes (proto/tessera/internal/v1/changes.proto): the control plane pushes the
// registry's change feed to its inference replicas (services/change_watcher.h), so N replicas do not
// each poll the shared database for live-pointer moves. Registered by TesseraServer on the control
// plane (role all or control).
//
// One thread (started by the first watch, stopped by Stop) waits on the registry for the feed's head to
// move -- in-process wake-ups for this process's own Promote/Rollback/publish, polling the database for
// other processes' (trainers' auto-promotions) -- and wakes every watch stream; each stream then lists
// the new changes and writes them as one batch. So the database sees one poller however many replicas
// watch, plus one read per stream per actual change.
//
// Authorization: ADMIN API keys only (as tessera.internal.v1.Blobs). Each watch holds a thread and a
// place under the stream limits, counted as the pseudo-tenant "(replicas)" (at most
// --max-streams-per-tenant watching replicas per control plane); keepalive batches at least every 5 s.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "absl/time/time.h"
#include "services/service_env.h"
#include "tessera/internal/v1/changes.grpc.pb.h"

namespace tessera::services {

class ChangesService final : public internal::v1::Changes::CallbackService {
 public:
  struct Options {
    absl::Duration keepalive = absl::Seconds(5);
    int batch = 256;  // changes per batch at most
  };
  ChangesService(const ServiceEnv& env, Options options);
  explicit ChangesService(const ServiceEnv& env) : ChangesService(env, Options()) {}
  ~ChangesService() override;

  // Ends the head watcher; open streams end with UNAVAILABLE at their next wake-up.
  void Stop();

  grpc::ServerWriteReactor<internal::v1::ChangeBatch>* Watch(grpc::CallbackServerContext* ctx,
                                                             const internal::v1::WatchChangesRequest* req) override;

 private:
  // Started by the first Watch (a server nobody watches runs no extra thread or poll); returns the head.
  int64_t StartHeadWatcher();
  void WatchHead();
  bool Stopping();
  // Waits until the head exceeds `after`, the service stops, or `timeout`; returns the head.
  int64_t WaitBeyond(int64_t after, absl::Duration timeout);

  const ServiceEnv& env_;
  Options options_;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t head_ = 0;       // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::thread head_thread_;
};

}  // namespace tessera::services
