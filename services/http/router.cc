#include "services/http/router.h"

#include <exception>
#include <optional>
#include <string>

#include "absl/time/clock.h"
#include "services/http/auth.h"
#include "services/http/errors.h"

namespace tessera::services::http {

void SendJson(httplib::Response& res, const nlohmann::json& body, int status) {
  res.status = status;
  res.set_content(Dump(body), "application/json");
}

void SendError(httplib::Response& res, const absl::Status& status) {
  SendJson(res, ErrorObject(status), HttpStatusFor(status.code()));
  if (status.code() == absl::StatusCode::kUnauthenticated) res.set_header("WWW-Authenticate", "Bearer");
  if (std::optional<int64_t> retry = RetryAfterSeconds(status)) res.set_header("Retry-After", std::to_string(*retry));
}

httplib::Server::Handler Router::Wrap(std::string method, bool authenticate, uint32_t scope, Handler handler,
                                      bool mutates) {
  const ServiceEnv* env = env_;
  return [env, method = "HTTP " + method, authenticate, scope, handler = std::move(handler), mutates](
             const httplib::Request& req, httplib::Response& res) {
    absl::Time start = absl::Now();
    absl::Status status;
    try {
      Call call{*env, req, res, {}};
      if (mutates) status = RequireControlPlane(*env, method);
      if (status.ok() && authenticate) {
        absl::StatusOr<storage::Principal> p = Authenticate(*env, req);
        if (p.ok()) call.principal = *std::move(p);
        status = p.status();
        if (status.ok() && scope != kAnyScope) {
          status = Authenticator::CheckKeyScope(call.principal, static_cast<storage::Scope>(scope));
        }
      }
      if (status.ok()) status = handler(call);
    } catch (const std::exception& e) {
      status = absl::InternalError(std::string("internal error: ") + e.what());
    }
    if (!status.ok()) SendError(res, status);
    RecordCall(*env, method, start, status);
  };
}

}  // namespace tessera::services::http
