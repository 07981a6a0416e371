// A minimal HTTP/1.0 responder for Prometheus scrapes: GET /metrics (or /) answers the rendered metrics,
// anything else 404. One accept thread, one request per connection, 5 s socket timeouts; not a general
// web server and never exposed for anything but metrics.
//
// Authorization (shared/API.md: /metrics accepts `Authorization: Bearer <admin key>`): a request that
// carries an Authorization header is served only when `authorize` accepts its bearer secret (401 for a
// missing/unknown key, 403 for a key that is not an ADMIN key); one without the header is served as
// before, for scrapers on a trusted (loopback) address.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "services/metrics.h"

namespace tessera::services {

class MetricsHttpServer {
 public:
  // `listen` is "HOST:PORT" (port 0 picks a free one; see port()).
  using Authorize = std::function<absl::Status(std::string_view secret)>;
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& listen,
                                                                   Metrics* metrics,
                                                                   Authorize authorize = nullptr);
  ~MetricsHttpServer();
  int port() const { return port_; }
  void Stop();

 private:
  MetricsHttpServer(int fd, int port, Metrics* metrics, Authorize authorize);
  void Loop();
  void Serve(int client);

  int fd_;
  int port_;
  Metrics* metrics_;
  Authorize authorize_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace tessera::services
