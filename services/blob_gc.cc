#include "services/blob_gc.h"

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "services/log.h"

namespace tessera::services {

BlobGc::BlobGc(storage::Registry* registry, Metrics* metrics, Options options)
    : registry_(registry), metrics_(metrics), options_(options) {
  metrics_->Describe("tessera_gc_runs_total", "counter", "Blob garbage collections run, by result.");
  metrics_->Describe("tessera_gc_blobs_deleted_total", "counter", "Unreferenced blobs deleted by the GC.");
  metrics_->Describe("tessera_gc_bytes_freed_total", "counter", "Bytes freed by the blob GC.");
}

BlobGc::~BlobGc() { Stop(); }

void BlobGc::Start() {
  if (options_.interval <= absl::ZeroDuration()) return;
  thread_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(mu_);
    while (!cv_.wait_for(lock, absl::ToChronoMilliseconds(options_.interval), [this] { return stopping_; })) {
      lock.unlock();
      absl::StatusOr<storage::GcStats> s = RunOnce();
      if (!s.ok()) LogError("blob garbage collection failed", {{"error", s.status().ToString()}});
      lock.lock();
    }
  });
}

void BlobGc::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<storage::GcStats> BlobGc::RunOnce() {
  std::lock_guard<std::mutex> run(run_mu_);
  // Only the process that owns the blobs collects them (role all or control); elsewhere CollectGarbage
  // is FAILED_PRECONDITION and the server does not start this collector.
  storage::BlobStore* owned = registry_->owned_blobs();
  if (owned == nullptr) return registry_->CollectGarbage(options_.grace);
  // Listing before and after names what went, for the log (the registry reports only counts).
  absl::StatusOr<std::vector<std::string>> before = owned->ListDigests();
  absl::StatusOr<storage::GcStats> stats = registry_->CollectGarbage(options_.grace);
  if (!stats.ok()) {
    metrics_->Add("tessera_gc_runs_total", {{"result", "error"}});
    return stats.status();
  }
  metrics_->Add("tessera_gc_runs_total", {{"result", "ok"}});
  metrics_->Add("tessera_gc_blobs_deleted_total", {}, static_cast<double>(stats->blobs_deleted));
  metrics_->Add("tessera_gc_bytes_freed_total", {}, static_cast<double>(stats->bytes_freed));
  nlohmann::json fields = {{"scanned", stats->blobs_scanned},
                           {"deleted", stats->blobs_deleted},
                           {"bytes_freed", stats->bytes_freed},
                           {"kept_in_grace", stats->blobs_kept_grace}};
  if (stats->blobs_deleted > 0) {
    absl::StatusOr<std::vector<std::string>> after = owned->ListDigests();
    if (before.ok() && after.ok()) {
      std::set<std::string> left(after->begin(), after->end());
      nlohmann::json removed = nlohmann::json::array();
      for (const std::string& d : *before) {
        if (!left.count(d) && removed.size() < 50) removed.push_back(d);
      }
      fields["removed"] = removed;
    }
    LogInfo("blob gc removed unreferenced blobs", fields);
  } else {
    Log(LogLevel::kDebug, "blob gc: nothing to remove", fields);
  }
  return stats;
}

}  // namespace tessera::services
