#include "services/http/errors.h"

namespace tessera::services::http {

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted: return 409;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kCancelled: return 499;
    case absl::StatusCode::kUnimplemented: return 501;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

std::string ParamOf(std::string_view message) {
  size_t colon = message.find(": ");
  if (colon == std::string_view::npos || colon == 0) return "";
  std::string_view head = message.substr(0, colon);
  if (!(head[0] >= 'a' && head[0] <= 'z') && head[0] != '_') return "";
  for (char c : head) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '[' || c == ']';
    if (!ok) return "";
  }
  return std::string(head);
}

nlohmann::json ErrorObject(const absl::Status& status) {
  std::string message(status.message());
  std::string param = ParamOf(message);
  const char* type = "invalid_request_error";
  nlohmann::json code = nullptr;
  switch (status.code()) {
    case absl::StatusCode::kUnauthenticated: code = "invalid_api_key"; break;
    case absl::StatusCode::kPermissionDenied: type = "permission_error"; break;
    case absl::StatusCode::kNotFound:
      if (param == "model") code = "model_not_found";
      break;
    case absl::StatusCode::kResourceExhausted: type = "rate_limit_error"; code = "rate_limit_exceeded"; break;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kCancelled: break;
    default: type = "server_error"; break;
  }
  if (message.empty()) message = absl::StatusCodeToString(status.code());
  return {{"error",
           {{"message", message}, {"type", type}, {"param", param.empty() ? nlohmann::json() : nlohmann::json(param)},
            {"code", code}}}};
}

absl::Status FieldError(std::string_view param, std::string_view message) {
  return absl::InvalidArgumentError(std::string(param) + ": " + std::string(message));
}

std::string Dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace tessera::services::http
