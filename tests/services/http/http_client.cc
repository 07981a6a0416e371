#include "tests/services/http/http_client.h"

namespace tessera::services::testing {

std::string HttpReply::header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? "" : it->second;
}

std::string HttpReply::error_field(const char* field) const {
  if (!json.is_object() || !json.contains("error") || !json["error"].is_object()) return "";
  const nlohmann::json& v = json["error"][field];
  return v.is_string() ? v.get<std::string>() : "";
}

ApiClient::ApiClient(int port, std::string key) : client_("127.0.0.1", port), key_(std::move(key)) {
  client_.set_read_timeout(300);
  client_.set_write_timeout(60);
}

httplib::Headers ApiClient::Headers() const {
  httplib::Headers h = extra_;
  if (!key_.empty()) h.emplace("Authorization", "Bearer " + key_);
  return h;
}

HttpReply ApiClient::Reply(const httplib::Result& r) {
  HttpReply out;
  if (!r) return out;
  out.status = r->status;
  out.body = r->body;
  out.headers = r->headers;
  out.json = nlohmann::json::parse(r->body, nullptr, false);
  if (out.json.is_discarded()) out.json = nullptr;
  return out;
}

HttpReply ApiClient::Get(const std::string& path) { return Reply(client_.Get(path, Headers())); }

HttpReply ApiClient::Post(const std::string& path, const nlohmann::json& body) {
  return PostRaw(path, body.dump(), "application/json");
}

HttpReply ApiClient::PostRaw(const std::string& path, const std::string& body, const std::string& content_type) {
  return Reply(client_.Post(path, Headers(), body, content_type));
}

HttpReply ApiClient::Delete(const std::string& path) { return Reply(client_.Delete(path, Headers())); }

HttpReply ApiClient::UploadFile(const std::string& filename, const std::string& content, const std::string& purpose) {
  httplib::MultipartFormDataItems items = {{"purpose", purpose, "", ""},
                                           {"file", content, filename, "application/jsonl"}};
  return Reply(client_.Post("/v1/files", Headers(), items));
}

std::vector<std::string> SseData(const std::string& body, std::string* error) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t eol = body.find('\n', pos);
    if (eol == std::string::npos) {
      *error = "unterminated line at byte " + std::to_string(pos);
      return out;
    }
    std::string line = body.substr(pos, eol - pos);
    if (line.rfind("data: ", 0) != 0) {
      *error = "expected a `data: ` line, got \"" + line + "\"";
      return out;
    }
    if (eol + 1 >= body.size() || body[eol + 1] != '\n') {
      *error = "event \"" + line + "\" is not followed by a blank line";
      return out;
    }
    out.push_back(line.substr(6));
    pos = eol + 2;
  }
  return out;
}

}  // namespace tessera::services::testing
