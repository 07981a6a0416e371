// A minimal HTTP/1.0 responder for Prometheus scrapes: GET /metrics (or /) answers the rendered metrics,
// anything else 404. One accept thread, one request per connection, 5 s socket timeouts; not a general
// web server and never exposed for anything but metrics.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "services/metrics.h"

namespace tessera::services {

class MetricsHttpServer {
 public:
  // `listen` is "HOST:PORT" (port 0 picks a free one; see port()).
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& listen,
                                                                   Metrics* metrics);
  ~MetricsHttpServer();
  int port() const { return port_; }
  void Stop();

 private:
  MetricsHttpServer(int fd, int port, Metrics* metrics);
  void Loop();
  void Serve(int client);

  int fd_;
  int port_;
  Metrics* metrics_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace tessera::services
