// The HTTP API tests' client: libcurl, a real HTTP client independent of the server's library (the
// issue asks for one), against a TestServer's --http-listen port with a Bearer key; plain HTTP or HTTPS
// (trusting a test CA, optionally presenting a client certificate for mutual TLS). Also a strict reader
// of SSE bodies.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace tessera::services::testing {

struct CaseInsensitiveLess {
  bool operator()(const std::string& a, const std::string& b) const;
};
using HeaderMap = std::multimap<std::string, std::string, CaseInsensitiveLess>;

struct HttpReply {
  int status = 0;     // 0: no response (connection or TLS error: see `error`)
  std::string error;  // libcurl's message when status is 0
  std::string body;
  nlohmann::json json;  // the body parsed (null when it is not JSON)
  HeaderMap headers;    // the final response's headers
  std::string header(const std::string& name) const;
  // error.param / error.code / error.type of an OpenAI error body ("" when absent or null).
  std::string error_field(const char* field) const;
};

// HTTPS: `ca_file` set (PEM of the CA to trust); `cert_file`/`key_file` present a client certificate.
struct ClientTls {
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};

class ApiClient {
 public:
  ApiClient(int port, std::string key, ClientTls tls = {});
  void set_header(const std::string& name, const std::string& value) { extra_.emplace(name, value); }
  HttpReply Get(const std::string& path);
  HttpReply Post(const std::string& path, const nlohmann::json& body);
  HttpReply PostRaw(const std::string& path, const std::string& body, const std::string& content_type);
  HttpReply Delete(const std::string& path);
  // multipart/form-data: file (filename, content) and purpose.
  HttpReply UploadFile(const std::string& filename, const std::string& content, const std::string& purpose);

 private:
  struct Body {
    const std::string* data = nullptr;  // POST body
    std::string content_type;
    bool multipart = false;
    std::string filename, file, purpose;
  };
  HttpReply Send(const char* method, const std::string& path, const Body& body);
  std::string base_;
  std::string key_;
  ClientTls tls_;
  HeaderMap extra_;
};

// The `data:` payloads of an SSE body, in order. Checks the framing as it reads: every event is one
// `data: ` line followed by a blank line; anything else makes `*error` non-empty.
std::vector<std::string> SseData(const std::string& body, std::string* error);

}  // namespace tessera::services::testing
