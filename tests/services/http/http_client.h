// The HTTP API tests' client: cpp-httplib's Client against a TestServer's --http-listen port, with a
// Bearer key, and a strict reader of SSE bodies.
#pragma once

#include <string>
#include <vector>

#include "httplib.h"
#include "nlohmann/json.hpp"

namespace tessera::services::testing {

struct HttpReply {
  int status = 0;  // 0: no response (connection error)
  std::string body;
  nlohmann::json json;  // the body parsed (null when it is not JSON)
  httplib::Headers headers;
  std::string header(const std::string& name) const;
  // error.param / error.code / error.type of an OpenAI error body ("" when absent or null).
  std::string error_field(const char* field) const;
};

class ApiClient {
 public:
  ApiClient(int port, std::string key);
  void set_header(const std::string& name, const std::string& value) { extra_.emplace(name, value); }
  HttpReply Get(const std::string& path);
  HttpReply Post(const std::string& path, const nlohmann::json& body);
  HttpReply PostRaw(const std::string& path, const std::string& body, const std::string& content_type);
  HttpReply Delete(const std::string& path);
  // multipart/form-data: file (filename, content) and purpose.
  HttpReply UploadFile(const std::string& filename, const std::string& content, const std::string& purpose);

 private:
  httplib::Headers Headers() const;
  HttpReply Reply(const httplib::Result& r);
  httplib::Client client_;
  std::string key_;
  httplib::Headers extra_;
};

// The `data:` payloads of an SSE body, in order. Checks the framing as it reads: every event is one
// `data: ` line followed by a blank line; anything else makes `*error` non-empty.
std::vector<std::string> SseData(const std::string& body, std::string* error);

}  // namespace tessera::services::testing
