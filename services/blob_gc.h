// BlobGc: the server's periodic blob garbage collection (Registry::CollectGarbage with a grace period).
//
// Blobs become garbage when nothing names them any more: a dataset deleted, a training checkpoint
// superseded by the next one or left behind by a finished job, an upload or publish that failed after
// its blob was written. Every `interval` the collector deletes unreferenced blobs older than `grace`
// (the grace period is what keeps a blob written for a publish still in progress) and logs what it
// removed; each deletion is also in the audit log ("blob.delete").
//
// Why it touches checkpoints first: the registry counts only dataset and version rows as references,
// but the checkpoint of a QUEUED or RUNNING job (a requeued job resumes from it) must survive however
// long the job waits or trains between checkpoints. Before each collection the checkpoint blobs of all
// unfinished jobs (of every process on this data dir) get their mtime refreshed, which is what the
// grace period counts from, so they are "young" for this round.
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

  // One collection: protects unfinished jobs' checkpoints, collects, logs and counts what went.
  absl::StatusOr<storage::GcStats> RunOnce();

 private:
  absl::Status ProtectCheckpoints();

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
