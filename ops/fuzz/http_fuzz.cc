// libFuzzer target: HTTP request handling (services/http/): httplib's request parsing, the routing,
// authentication and every route's handler with its JSON field parsing, over the real server state of
// fuzz_server.h, without a socket (the request bytes go through httplib::Server::process_request on a
// memory stream).
// Input: "METHOD PATH\n" + header lines ("Name: value\n") + "\n" + body; the harness adds Host,
// Content-Length (unless a Transfer-Encoding header is given) and Connection: close. $ADMIN, $ACME,
// $OTHER, $DATASET and $JOB are replaced by the server's keys and ids.
// Checked besides ASan/UBSan: a response always comes back; every status >= 400 carries OpenAI's error
// object with a non-empty message (except for HEAD, which has no body); never 500 (an exception or an
// unmapped error) and never 501.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "httplib.h"
#include "nlohmann/json.hpp"
#include "ops/fuzz/fuzz_server.h"
#include "services/http/server.h"

namespace {

class MemoryStream : public httplib::Stream {
 public:
  explicit MemoryStream(std::string in) : in_(std::move(in)) {}
  bool is_readable() const override { return true; }
  bool is_writable() const override { return true; }
  ssize_t read(char* ptr, size_t size) override {
    size_t n = std::min(size, in_.size() - pos_);
    std::memcpy(ptr, in_.data() + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char* ptr, size_t size) override {
    out_.append(ptr, size);
    return static_cast<ssize_t>(size);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = "127.0.0.1";
    port = 40000;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = "127.0.0.1";
    port = 8080;
  }
  socket_t socket() const override { return INVALID_SOCKET; }
  const std::string& out() const { return out_; }

 private:
  std::string in_;
  size_t pos_ = 0;
  std::string out_;
};

// The server's routes, served without a listener: process_request is protected in httplib::Server.
class InMemoryServer : public httplib::Server {
 public:
  std::string Serve(std::string request) {
    MemoryStream stream(std::move(request));
    bool closed = false;
    process_request(stream, /*close_connection=*/true, closed, [](httplib::Request&) {});
    return stream.out();
  }
};

InMemoryServer& Server() {
  static InMemoryServer* server = [] {
    auto* s = new InMemoryServer();
    tessera::services::http::ConfigureRoutes(*s, &tessera::fuzz::GetFuzzServer().server->env());
    return s;
  }();
  return *server;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Server();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const tessera::fuzz::FuzzServer& fs = tessera::fuzz::GetFuzzServer();
  std::string in = fs.Substitute(std::string(reinterpret_cast<const char*>(data), size));
  size_t eol = in.find('\n');
  if (eol == std::string::npos) return 0;
  std::string request_line = in.substr(0, eol);
  size_t sep = in.find("\n\n", eol);
  std::string headers = sep == std::string::npos ? in.substr(eol + 1) : in.substr(eol + 1, sep - eol - 1);
  std::string body = sep == std::string::npos ? "" : in.substr(sep + 2);
  std::string raw = request_line + " HTTP/1.1\r\nHost: localhost\r\n";
  bool chunked = false;
  size_t pos = 0;
  while (pos < headers.size()) {
    size_t end = headers.find('\n', pos);
    if (end == std::string::npos) end = headers.size();
    std::string line = headers.substr(pos, end - pos);
    if (!line.empty()) raw += line + "\r\n";
    if (line.rfind("Transfer-Encoding", 0) == 0) chunked = true;
    pos = end + 1;
  }
  if (!chunked) raw += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  raw += "Connection: close\r\n\r\n" + body;

  std::string out = Server().Serve(raw);
  if (out.rfind("HTTP/1.1 ", 0) != 0) return 0;  // httplib dropped a request it could not read
  int status = std::atoi(out.c_str() + 9);
  if (status == 500 || status == 501) {
    std::fprintf(stderr, "http_fuzz: status %d for:\n%s\n---\n%s\n", status, raw.c_str(), out.c_str());
    __builtin_trap();
  }
  // A HEAD answer has no body (RFC 9110 9.3.2; httplib sends the headers only, also when the rest of
  // the request line is malformed, and it splits the line at tabs as at spaces).
  const bool head = request_line.substr(0, request_line.find_first_of(" \t")) == "HEAD";
  if (status >= 400 && !head) {
    size_t body_at = out.find("\r\n\r\n");
    nlohmann::json j = nlohmann::json::parse(body_at == std::string::npos ? "" : out.substr(body_at + 4), nullptr,
                                             false);
    if (j.is_discarded() || !j.is_object() || !j.contains("error") || !j["error"].is_object() ||
        !j["error"].contains("message") || !j["error"]["message"].is_string() ||
        j["error"]["message"].get<std::string>().empty()) {
      std::fprintf(stderr, "http_fuzz: status %d without OpenAI's error object:\n%s\n---\n%s\n", status, raw.c_str(),
                   out.c_str());
      __builtin_trap();
    }
  }
  return 0;
}
