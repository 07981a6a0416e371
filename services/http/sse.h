// Server-Sent Events framing as OpenAI streams: each event is one line `data: <json>` followed by a
// blank line; the stream ends with `data: [DONE]`. Writes go straight to the connection (no buffering
// beyond the socket's), so a client sees each delta as it is produced.
#pragma once

#include "httplib.h"
#include "nlohmann/json.hpp"

namespace tessera::services::http {

inline constexpr char kEventStreamType[] = "text/event-stream";

class SseWriter {
 public:
  explicit SseWriter(httplib::DataSink& sink) : sink_(sink) {}
  // False once the client is gone (the caller then stops producing).
  bool Send(const nlohmann::json& event);
  // Writes `data: [DONE]` and ends the response.
  bool Done();

 private:
  bool Write(const std::string& payload);
  httplib::DataSink& sink_;
};

}  // namespace tessera::services::http
