#include "tests/services/http/http_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <memory>

#include "absl/strings/str_cat.h"

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

namespace {

// curl_global_init is not thread-safe: once, before any handle.
void GlobalInit() {
  static const bool done = [] { return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK; }();
  (void)done;
}

size_t AppendBody(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

// Header lines of every response curl reads (a 100 Continue first, redirects): a status line starts a
// new set, so `headers` ends with the final response's.
size_t AppendHeader(char* data, size_t size, size_t n, void* out) {
  auto* headers = static_cast<HeaderMap*>(out);
  std::string line(data, size * n);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  if (line.rfind("HTTP/", 0) == 0) {
    headers->clear();
  } else if (size_t colon = line.find(':'); colon != std::string::npos) {
    size_t v = line.find_first_not_of(" \t", colon + 1);
    headers->emplace(line.substr(0, colon), v == std::string::npos ? "" : line.substr(v));
  }
  return size * n;
}

}  // namespace

bool CaseInsensitiveLess::operator()(const std::string& a, const std::string& b) const {
  return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end(), [](unsigned char x, unsigned char y) {
    return std::tolower(x) < std::tolower(y);
  });
}

ApiClient::ApiClient(int port, std::string key, ClientTls tls)
    : base_(absl::StrCat(tls.ca_file.empty() ? "http" : "https", "://127.0.0.1:", port)),
      key_(std::move(key)),
      tls_(std::move(tls)) {
  GlobalInit();
}

HttpReply ApiClient::Send(const char* method, const std::string& path, const Body& body) {
  HttpReply out;
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) {
    out.error = "curl_easy_init failed";
    return out;
  }
  CURL* c = curl.get();
  std::string url = base_ + path;
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 300L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, AppendBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &out.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, AppendHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &out.headers);
  if (!tls_.ca_file.empty()) {
    curl_easy_setopt(c, CURLOPT_CAINFO, tls_.ca_file.c_str());
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
  }
  if (!tls_.cert_file.empty()) curl_easy_setopt(c, CURLOPT_SSLCERT, tls_.cert_file.c_str());
  if (!tls_.key_file.empty()) curl_easy_setopt(c, CURLOPT_SSLKEY, tls_.key_file.c_str());

  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> list(nullptr, curl_slist_free_all);
  auto add = [&](const std::string& h) { list.reset(curl_slist_append(list.release(), h.c_str())); };
  if (!key_.empty()) add("Authorization: Bearer " + key_);
  for (const auto& [name, value] : extra_) add(name + ": " + value);
  add("Expect:");  // no 100-continue round trip for larger bodies
  std::unique_ptr<curl_mime, decltype(&curl_mime_free)> mime(nullptr, curl_mime_free);
  if (body.multipart) {
    mime.reset(curl_mime_init(c));
    curl_mimepart* part = curl_mime_addpart(mime.get());
    curl_mime_name(part, "purpose");
    curl_mime_data(part, body.purpose.data(), body.purpose.size());
    part = curl_mime_addpart(mime.get());
    curl_mime_name(part, "file");
    curl_mime_data(part, body.file.data(), body.file.size());
    curl_mime_filename(part, body.filename.c_str());
    curl_mime_type(part, "application/jsonl");
    curl_easy_setopt(c, CURLOPT_MIMEPOST, mime.get());
  } else if (body.data != nullptr) {
    add("Content-Type: " + body.content_type);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data->data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.data->size()));
  }
  if (std::string(method) != "GET" && std::string(method) != "POST") curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, list.get());

  CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    out.error = curl_easy_strerror(rc);
    out.body.clear();
    out.headers.clear();
    return out;
  }
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  out.status = static_cast<int>(status);
  out.json = nlohmann::json::parse(out.body, nullptr, false);
  if (out.json.is_discarded()) out.json = nullptr;
  return out;
}

HttpReply ApiClient::Get(const std::string& path) { return Send("GET", path, {}); }

HttpReply ApiClient::Post(const std::string& path, const nlohmann::json& body) {
  return PostRaw(path, body.dump(), "application/json");
}

HttpReply ApiClient::PostRaw(const std::string& path, const std::string& body, const std::string& content_type) {
  Body b;
  b.data = &body;
  b.content_type = content_type;
  return Send("POST", path, b);
}

HttpReply ApiClient::Delete(const std::string& path) { return Send("DELETE", path, {}); }

HttpReply ApiClient::UploadFile(const std::string& filename, const std::string& content, const std::string& purpose) {
  Body b;
  b.multipart = true;
  b.filename = filename;
  b.file = content;
  b.purpose = purpose;
  return Send("POST", "/v1/files", b);
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
