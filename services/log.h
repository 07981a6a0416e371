// Structured logs: one JSON object per line on stderr, e.g.
//   {"ts":"2026-11-23T06:00:00.123456Z","level":"info","msg":"job finished","job_id":"job_x"}
// Thread-safe (one write(2) per line). Level filtering via SetLogLevel ("debug" < "info" < "warn" < "error").
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"

namespace tessera::services {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

void SetLogLevel(LogLevel level);
// False for an unknown name.
bool ParseLogLevel(std::string_view name, LogLevel* level);

// `fields` are merged into the line's object (ts, level and msg are set by the logger).
void Log(LogLevel level, std::string_view msg, const nlohmann::json& fields = nlohmann::json::object());

inline void LogInfo(std::string_view msg, const nlohmann::json& f = nlohmann::json::object()) {
  Log(LogLevel::kInfo, msg, f);
}
inline void LogWarn(std::string_view msg, const nlohmann::json& f = nlohmann::json::object()) {
  Log(LogLevel::kWarn, msg, f);
}
inline void LogError(std::string_view msg, const nlohmann::json& f = nlohmann::json::object()) {
  Log(LogLevel::kError, msg, f);
}

}  // namespace tessera::services
