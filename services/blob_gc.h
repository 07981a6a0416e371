// BlobGc: the server's periodic blob garbage collection (Registry::CollectGarbage with a grace period).
//
// Blobs become garbage when nothing names them any more: a dataset deleted, a training checkpoint
// superseded by the next one or left behind by a finished job, an upload or publish that failed after
// its blob was written. Every `interval` the collector deletes unreferenced blobs older than `grace`
// (the grace period is what keeps a blob written for a publish still in progress) and logs what it
// removed; each deletion is also in the audit log ("blob.delete").
// The checkpoint of a QUEUED or RUNNING job (a requeued job resumes from it) is a reference in the
// registry's eyes, so it survives however long the job waits or trains between checkpoints.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/metrics.h"
#include "storage/registry.h"

namespace tessera::services {

class BlobGc {
 public:
  struct Options {
    absl::Duration interval = absl::Minutes(5);  // <= 0: no periodic runs (RunOnce still works)
    absl::Duration grace = absl::Minutes(10);
  };

  BlobGc(storage::Registry* registry, Metrics* metrics, Options options);
  ~BlobGc();

  // Starts the periodic thread (first run one interval after Start); no-op when interval <= 0.
  void Start();
  void Stop();

  // One collection: collects, logs and counts what went.
  absl::StatusOr<storage::GcStats> RunOnce();

 private:
  storage::Registry* registry_;
  Metrics* metrics_;
  Options options_;
  std::mutex run_mu_;  // one collection at a time
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tessera::services
