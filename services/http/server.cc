#include "services/http/server.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "services/http/chat.h"
#include "services/http/completions.h"
#include "services/http/console_api.h"
#include "services/http/console_page.h"
#include "services/http/files.h"
#include "services/http/fine_tuning.h"
#include "services/http/models.h"
#include "services/http/router.h"

namespace tessera::services::http {

void ConfigureRoutes(httplib::Server& svr, const ServiceEnv* env) {
  svr.set_payload_max_length(static_cast<size_t>(env->max_dataset_bytes) + (1 << 20));
  // Unknown routes: OpenAI's error object rather than httplib's empty 404.
  svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    absl::Status st = res.status == 404
                          ? absl::NotFoundError(absl::StrCat("Unknown request URL: ", req.method, " ", req.path))
                          : absl::Status(res.status == 413 ? absl::StatusCode::kResourceExhausted
                                                           : absl::StatusCode::kInvalidArgument,
                                         absl::StrCat("HTTP ", res.status, " for ", req.method, " ", req.path));
    int code = res.status;
    SendError(res, st);
    res.status = code;
  });

  // Range headers are ignored (RFC 9110 14.2 lets a server ignore Range; no route serves partial content):
  // httplib would otherwise slice any body, errors included -- http_fuzz found a 404 whose OpenAI error
  // object went out as its first two bytes. The request is httplib's own, not const.
  svr.set_pre_routing_handler([](const httplib::Request& req, httplib::Response&) {
    const_cast<httplib::Request&>(req).ranges.clear();
    return httplib::Server::HandlerResponse::Unhandled;
  });

  Router router(&svr, env);
  RegisterModels(router);
  RegisterCompletions(router);
  RegisterChat(router);
  RegisterFiles(router);
  RegisterFineTuning(router);
  RegisterConsoleApi(router);
  RegisterConsolePage(router);
}

absl::StatusOr<std::unique_ptr<HttpApiServer>> HttpApiServer::Start(const HttpOptions& options,
                                                                   const ServiceEnv* env) {
  size_t colon = options.listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(options.listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--http-listen: expected HOST:PORT, got \"", options.listen, "\""));
  }
  std::string host = options.listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";

  std::unique_ptr<HttpApiServer> s(new HttpApiServer());
  if (options.tls_cert_file.empty()) {
    s->server_ = std::make_unique<httplib::Server>();
  } else {
    // httplib (Debian's build has CPPHTTPLIB_OPENSSL_SUPPORT) loads the files into an OpenSSL context;
    // a client CA turns on SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT.
    auto ssl = std::make_unique<httplib::SSLServer>(
        options.tls_cert_file.c_str(), options.tls_key_file.c_str(),
        options.tls_client_ca_file.empty() ? nullptr : options.tls_client_ca_file.c_str());
    if (!ssl->is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--http-listen ", options.listen, ": cannot set up TLS from --tls-cert ", options.tls_cert_file,
          " and --tls-key ", options.tls_key_file,
          options.tls_client_ca_file.empty() ? "" : absl::StrCat(" and --tls-client-ca ", options.tls_client_ca_file),
          " (unreadable, not PEM, or the key does not match the certificate)"));
    }
    s->server_ = std::move(ssl);
  }
  httplib::Server& svr = *s->server_;
  int threads = options.threads;
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  svr.set_keep_alive_timeout(5);
  // Headers and body leave in separate writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms
  // per keep-alive request (wrk: ~500 -> see RESULTS.md).
  svr.set_tcp_nodelay(true);
  svr.set_read_timeout(30);
  svr.set_write_timeout(30);
  ConfigureRoutes(svr, env);

  if (port == 0) {
    s->port_ = svr.bind_to_any_port(host);
  } else if (svr.bind_to_port(host, port)) {
    s->port_ = port;
  }
  if (s->port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("--http-listen ", options.listen, ": cannot bind (address in use or invalid?)"));
  }
  s->thread_ = std::thread([&svr] { svr.listen_after_bind(); });
  return s;
}

void HttpApiServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

HttpApiServer::~HttpApiServer() { Stop(); }

}  // namespace tessera::services::http
