// HttpApiServer: the OpenAI-compatible HTTP API (and the web console) on `--http-listen HOST:PORT`,
// in the server process, over the same ServiceEnv as the gRPC services: same keys, tenants, engine,
// registry and metrics.
//
// Library: cpp-httplib 0.11.4 (Debian's libcpp-httplib-dev) rather than Boost.Beast 1.81. Handlers here
// are blocking by nature (InferenceEngine::Generate blocks, streaming through a delta callback; the
// registry is synchronous SQLite), which is httplib's model -- a thread per request from a pool, a
// chunked content provider for SSE -- while Beast would need our own connection loop, parser glue and
// a thread hand-off for every blocking call; httplib also brings TLS through OpenSSL (SSLServer, with
// the server's --tls-cert/--tls-key/--tls-client-ca). The tests use a separate client, libcurl. Its throughput is far above what the model produces: see RESULTS.md (wrk on
// GET /v1/models).
//
// Threads: `threads` workers; a streaming completion holds one for its duration, so the pool bounds
// concurrent HTTP requests (more wait in the accept queue). Keep-alive connections are closed after 5 s
// idle so they do not pin workers.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "services/service_env.h"

namespace httplib {
class Server;
}

namespace tessera::services::http {

struct HttpOptions {
  std::string listen;  // HOST:PORT; port 0 picks a free one (see port())
  // HTTPS with this certificate chain and key (PEM files; the server's --tls-cert/--tls-key, as for
  // gRPC); with tls_client_ca_file, mutual TLS: a client must present a certificate that CA signed
  // (the handshake fails otherwise). Empty: plain HTTP.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  int threads = 32;
};

// Everything a request meets below the socket: the payload limit, the error handler (OpenAI's error
// object for unknown routes and httplib's own refusals) and every route. Start uses it; the HTTP fuzz
// target (ops/fuzz/http_fuzz.cc) feeds requests through it without a socket.
void ConfigureRoutes(httplib::Server& svr, const ServiceEnv* env);

class HttpApiServer {
 public:
  static absl::StatusOr<std::unique_ptr<HttpApiServer>> Start(const HttpOptions& options, const ServiceEnv* env);
  ~HttpApiServer();
  int port() const { return port_; }
  // Stops accepting and waits for the listener thread.
  void Stop();

 private:
  HttpApiServer() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace tessera::services::http
