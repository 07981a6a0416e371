// Route registration for the HTTP API: every handler is a function Call -> absl::Status that fills the
// response on success; the router authenticates first (Bearer key, errors.h's 401), checks the key's
// scope for the route as gRPC does per RPC (storage::Scope: inference, fine-tune, read; 403 naming the
// scope; kAnyScope for routes every key may use, such as listing models), turns a failed
// status into OpenAI's error object, catches any exception at this boundary (a 500, never a crash), and
// records each call in the same metrics as gRPC (tessera_rpc_requests_total / latency, method
// "HTTP <METHOD> <route>"). A streamed response is recorded when its handler returns (headers decided).
// POST and DELETE routes outside the inference scope change the registry: on an inference replica or a
// trainer (--role) they are 503 naming the control plane (RequireControlPlane), before authentication.
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "services/service_env.h"

namespace tessera::services::http {

struct Call {
  const ServiceEnv& env;
  const httplib::Request& req;
  httplib::Response& res;
  storage::Principal principal;  // empty for public routes
};
using Handler = std::function<absl::Status(Call& call)>;
inline constexpr uint32_t kAnyScope = 0;

class Router {
 public:
  Router(httplib::Server* server, const ServiceEnv* env) : server_(server), env_(env) {}

  // `pattern` is httplib's (an ECMAScript regex over the path; groups land in req.matches).
  void Get(const std::string& pattern, const std::string& route, uint32_t scope, Handler handler) {
    server_->Get(pattern, Wrap("GET " + route, true, scope, std::move(handler)));
  }
  void Post(const std::string& pattern, const std::string& route, uint32_t scope, Handler handler) {
    server_->Post(pattern, Wrap("POST " + route, true, scope, std::move(handler), scope != storage::kScopeInference));
  }
  void Delete(const std::string& pattern, const std::string& route, uint32_t scope, Handler handler) {
    server_->Delete(pattern, Wrap("DELETE " + route, true, scope, std::move(handler), true));
  }
  // Routes that check credentials themselves (the console's login page and static files).
  void GetPublic(const std::string& pattern, const std::string& route, Handler handler) {
    server_->Get(pattern, Wrap("GET " + route, false, kAnyScope, std::move(handler)));
  }

 private:
  httplib::Server::Handler Wrap(std::string method, bool authenticate, uint32_t scope, Handler handler,
                                bool mutates = false);
  httplib::Server* server_;
  const ServiceEnv* env_;
};

void SendJson(httplib::Response& res, const nlohmann::json& body, int status = 200);
void SendError(httplib::Response& res, const absl::Status& status);

}  // namespace tessera::services::http
