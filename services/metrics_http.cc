#include "services/metrics_http.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "services/log.h"

namespace tessera::services {

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(const std::string& listen,
                                                                            Metrics* metrics,
                                                                            Authorize authorize) {
  size_t colon = listen.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-listen: expected HOST:PORT, got \"", listen, "\""));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string port_str = std::to_string(port);
  if (int rc = getaddrinfo(host.c_str(), port_str.c_str(), &hints, &res); rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-listen: cannot resolve \"", host, "\": ", gai_strerror(rc)));
  }
  int fd = -1;
  std::string last_error = "no address";
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, 64) == 0) break;
    last_error = strerror(errno);
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("--metrics-listen ", listen, ": ", last_error));
  }
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  int bound_port = addr.ss_family == AF_INET6
                       ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                       : ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  return std::unique_ptr<MetricsHttpServer>(new MetricsHttpServer(fd, bound_port, metrics, std::move(authorize)));
}

MetricsHttpServer::MetricsHttpServer(int fd, int port, Metrics* metrics, Authorize authorize)
    : fd_(fd), port_(port), metrics_(metrics), authorize_(std::move(authorize)) {
  thread_ = std::thread([this] { Loop(); });
}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

void MetricsHttpServer::Stop() {
  if (stop_.exchange(true)) return;
  if (thread_.joinable()) thread_.join();
  close(fd_);
}

void MetricsHttpServer::Loop() {
  while (!stop_.load()) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    int client = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    Serve(client);
    close(client);
  }
}

void MetricsHttpServer::Serve(int client) {
  timeval tv{5, 0};
  setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  std::string request;
  char buf[2048];
  while (request.find("\r\n\r\n") == std::string::npos && request.find("\n\n") == std::string::npos &&
         request.size() < 16384) {
    ssize_t n = recv(client, buf, sizeof(buf), 0);
    if (n <= 0) break;
    request.append(buf, n);
  }
  std::string status = "200 OK";
  std::string body;
  std::string content_type = "text/plain; version=0.0.4; charset=utf-8";
  size_t sp1 = request.find(' ');
  size_t sp2 = sp1 == std::string::npos ? sp1 : request.find(' ', sp1 + 1);
  std::string method = request.substr(0, sp1);
  std::string path = sp2 == std::string::npos ? "" : request.substr(sp1 + 1, sp2 - sp1 - 1);
  // The Authorization header's value, if any (header names are case-insensitive).
  std::optional<std::string> authorization;
  for (size_t pos = request.find('\n'); pos != std::string::npos && pos + 1 < request.size();
       pos = request.find('\n', pos + 1)) {
    size_t end = request.find('\n', pos + 1);
    std::string line = request.substr(pos + 1, end == std::string::npos ? std::string::npos : end - pos - 1);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.size() > 14 && absl::StartsWithIgnoreCase(line, "authorization:")) {
      authorization = std::string(absl::StripAsciiWhitespace(line.substr(14)));
    }
  }
  absl::Status auth = absl::OkStatus();
  if (authorization) {
    if (!authorize_) {
      auth = absl::PermissionDeniedError("this endpoint takes no keys");
    } else if (authorization->size() < 7 || !absl::StartsWithIgnoreCase(*authorization, "bearer ")) {
      auth = absl::UnauthenticatedError("malformed Authorization header: expected \"Bearer <admin key>\"");
    } else {
      auth = authorize_(std::string_view(*authorization).substr(7));
    }
  }
  if (method != "GET") {
    status = "405 Method Not Allowed";
    body = "only GET\n";
  } else if (!auth.ok()) {
    status = auth.code() == absl::StatusCode::kPermissionDenied ? "403 Forbidden" : "401 Unauthorized";
    body = std::string(auth.message()) + "\n";
  } else if (path == "/metrics" || path == "/") {
    body = metrics_->Render();
  } else {
    status = "404 Not Found";
    body = "try /metrics\n";
  }
  std::string response = absl::StrCat("HTTP/1.0 ", status, "\r\nContent-Type: ", content_type,
                                      "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n",
                                      body);
  size_t off = 0;
  while (off < response.size()) {
    ssize_t n = send(client, response.data() + off, response.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += n;
  }
}

}  // namespace tessera::services
