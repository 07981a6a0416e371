// tessera.v1.Inference: Generate, GenerateStream and Score, delegated to the InferenceEngine (the
// runtime). Handlers authorize, validate the request (INVALID_ARGUMENT naming the field) and translate;
// generation runs on the work pool / the stream's own thread, never on gRPC's callback threads.
// Without an engine every RPC answers UNAVAILABLE saying so.
#pragma once

#include "services/rate_limiter.h"
#include "services/service_env.h"
// First: the callback handlers this service's base class instantiates parse requests through
// proto/request_parse.h (invalid UTF-8 -> INVALID_ARGUMENT naming the field, not UNIMPLEMENTED).
#include "tessera/v1/request_traits.h"
#include "tessera/v1/inference.grpc.pb.h"

namespace tessera::services {

class InferenceService final : public v1::Inference::CallbackService {
 public:
  explicit InferenceService(const ServiceEnv& env) : env_(env) {}
  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* ctx, const v1::GenerateRequest* req,
                                     v1::GenerateResponse* resp) override;
  grpc::ServerWriteReactor<v1::GenerateChunk>* GenerateStream(grpc::CallbackServerContext* ctx,
                                                              const v1::GenerateRequest* req) override;
  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* ctx, const v1::ScoreRequest* req,
                                  v1::ScoreResponse* resp) override;

 private:
  const ServiceEnv& env_;
};

// Counts a finished generation in the metrics (tokens by tenant, routed tokens per expert slot); shared
// with the HTTP API's completions.
void RecordGeneration(const ServiceEnv& env, const std::string& tenant, const GenerateOutput& out);

// The tenant's requests/s and tokens/min quotas (services/rate_limiter.h) around one inference request,
// shared with the HTTP API: Admit before the engine runs (RESOURCE_EXHAUSTED with retry-after when over;
// an empty ticket when the server has no limiter), Settle with the outcome and the tokens it used.
absl::StatusOr<RateTicket> AdmitInference(const ServiceEnv& env, const std::string& tenant, const TextInput& input,
                                          int64_t max_tokens);
void SettleInference(const ServiceEnv& env, const RateTicket& ticket, const absl::Status& s, int64_t tokens);

}  // namespace tessera::services
