// tessera.v1.Inference: Generate, GenerateStream and Score, delegated to the InferenceEngine (the
// runtime). Handlers authorize, validate the request (INVALID_ARGUMENT naming the field) and translate;
// generation runs on the work pool / the stream's own thread, never on gRPC's callback threads.
// Without an engine every RPC answers UNAVAILABLE saying so.
#pragma once

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

}  // namespace tessera::services
