#include "services/http/sse.h"

#include "services/http/errors.h"

namespace tessera::services::http {

bool SseWriter::Write(const std::string& payload) {
  std::string frame = "data: " + payload + "\n\n";
  if (sink_.is_writable && !sink_.is_writable()) return false;
  return sink_.write(frame.data(), frame.size());
}

bool SseWriter::Send(const nlohmann::json& event) { return Write(Dump(event)); }

bool SseWriter::Done() {
  bool ok = Write("[DONE]");
  sink_.done();
  return ok;
}

}  // namespace tessera::services::http
