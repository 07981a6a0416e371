// StreamLimiter: bounds the long-lived streams the server holds open -- gRPC GenerateStream, WatchJob
// and ExportVersion (each holds a thread for its duration) and HTTP SSE completions (each holds an HTTP
// worker) -- per tenant and in total, so one tenant opening streams cannot take every thread.
//
// Acquire(tenant) returns a StreamSlot (move-only; the stream counts until it is destroyed) or
// RESOURCE_EXHAUSTED naming the limit that was reached (the tenant's or the server's), its flag, and
// what to do. Limits <= 0 mean unbounded. Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"

namespace tessera::services {

class StreamLimiter;

class StreamSlot {
 public:
  StreamSlot() = default;
  StreamSlot(StreamSlot&& o) noexcept : owner_(o.owner_), tenant_(std::move(o.tenant_)) { o.owner_ = nullptr; }
  StreamSlot& operator=(StreamSlot&& o) noexcept;
  StreamSlot(const StreamSlot&) = delete;
  StreamSlot& operator=(const StreamSlot&) = delete;
  ~StreamSlot() { Release(); }
  void Release();

 private:
  friend class StreamLimiter;
  StreamSlot(StreamLimiter* owner, std::string tenant) : owner_(owner), tenant_(std::move(tenant)) {}
  StreamLimiter* owner_ = nullptr;
  std::string tenant_;
};

struct StreamCounts {
  int64_t total = 0;
  std::map<std::string, int64_t> by_tenant;  // tenants with open streams
};

class StreamLimiter {
 public:
  StreamLimiter(int64_t max_total, int64_t max_per_tenant) : max_total_(max_total), max_per_tenant_(max_per_tenant) {}
  // `kind` names the stream in the error ("GenerateStream", "WatchJob", ...).
  absl::StatusOr<StreamSlot> Acquire(const std::string& tenant, const char* kind);
  StreamCounts Counts();
  int64_t max_total() const { return max_total_; }
  int64_t max_per_tenant() const { return max_per_tenant_; }

 private:
  friend class StreamSlot;
  void Release(const std::string& tenant);
  const int64_t max_total_;
  const int64_t max_per_tenant_;
  std::mutex mu_;
  StreamCounts counts_;
};

}  // namespace tessera::services
