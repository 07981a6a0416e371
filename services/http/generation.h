// What /v1/completions and /v1/chat/completions share: reading the sampling fields of an OpenAI request
// into the engine's GenerateParams (the same InferenceEngine::Generate the gRPC Inference service calls,
// so the same request gives the same text over both), running it, and answering either one JSON object
// or an SSE stream of chunks.
//
// Fields: model (required), max_tokens (chat also max_completion_tokens; default 16 for completions as
// OpenAI, 64 for chat; 1..the server's limit), temperature [0, 2] (default 1, as OpenAI; 0 = greedy),
// top_p [0, 1] (0 = greedy), top_k >= 0 (vLLM's extension), seed (default: a fresh random one, so
// unseeded sampling varies as OpenAI's does), stop (a string or up to 16 strings), n (only 1), stream,
// stream_options.include_usage, logprobs (completions: an integer 0..5; chat: a boolean, with
// top_logprobs 0..20; shapes in logprobs.h). Known but unsupported features are refused by name rather
// than silently changing results: n/best_of > 1, echo, suffix, logit_bias, non-zero frequency/presence
// penalties. Unknown fields are ignored.
//
// finish_reason: "stop" (end of sequence / end of turn / a stop string) or "length". Streams: chunks
// carry the text deltas (already stop-string safe), then one chunk with the finish_reason, then with
// include_usage one chunk with `choices: []` and the usage, then `data: [DONE]`; every chunk has
// "usage": null when include_usage is set, as OpenAI's do. An error after the stream started is sent as
// one `data: {"error": {...}}` event (OpenAI's clients raise it) and the stream ends without [DONE].
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "services/http/auth.h"
#include "services/http/router.h"
#include "services/inference_engine.h"

namespace tessera::services::http {

struct CompletionRequest {
  std::string model_name;  // as sent (echoed in responses)
  ModelRef model;
  GenerateParams params;   // input filled by the endpoint
  bool stream = false;
  bool include_usage = false;
};

enum class Endpoint { kCompletions, kChat };

// Reads model and the sampling fields (not the input) and resolves the model for the caller.
absl::StatusOr<CompletionRequest> ReadCompletionRequest(const Call& call, const nlohmann::json& body,
                                                        Endpoint endpoint);

// How an endpoint shapes its answers.
struct ResponseShape {
  const char* id_prefix;      // "cmpl-" | "chatcmpl-"
  const char* object;         // "text_completion" | "chat.completion"
  const char* chunk_object;   // "text_completion" | "chat.completion.chunk"
  // The choice's "logprobs" for some tokens (null when not asked for); `offset` as LegacyLogprobs.
  std::function<nlohmann::json(const std::vector<TokenLogprob>& tokens, int64_t* offset)> logprobs;
  // The non-streamed choice for the whole text.
  std::function<nlohmann::json(const std::string& text, const char* finish_reason, nlohmann::json logprobs)> choice;
  // A streamed choice: `first` is the first chunk (chat sends the role there); finish_reason null until
  // the last.
  std::function<nlohmann::json(const std::string& delta, const nlohmann::json& finish_reason, bool first,
                               nlohmann::json logprobs)>
      chunk;
};

// Generates and answers (JSON or SSE), setting kExpertVersionHeader.
absl::Status ServeCompletion(Call& call, CompletionRequest request, const ResponseShape& shape);

const char* FinishReasonName(FinishReason r);

}  // namespace tessera::services::http
