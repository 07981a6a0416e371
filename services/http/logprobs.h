// Token logprobs in OpenAI's two JSON shapes (values: services/inference_engine.h TokenLogprob, the
// log-softmax of the raw logits before temperature/top-p).
//
// Legacy /v1/completions (`logprobs: N`, 0..5):
//   {"tokens": [t...], "token_logprobs": [lp...], "top_logprobs": [{t: lp, ...}...], "text_offset": [o...]}
//   top_logprobs[i] holds the N most likely tokens and always the sampled one (so up to N+1 entries, as
//   OpenAI documents); text_offset[i] is where token i starts in the choice's text, in characters
//   (0-based, as vLLM without echo), continued across the chunks of a stream.
// Chat /v1/chat/completions (`logprobs: true`, `top_logprobs: N` 0..20):
//   {"content": [{"token", "logprob", "bytes": [..], "top_logprobs": [{"token", "logprob", "bytes"}...]}],
//    "refusal": null}
// A token that holds only part of a UTF-8 character is written "bytes:\\xNN" (OpenAI's form); its raw
// bytes are in `bytes` (chat).
#pragma once

#include <cstdint>
#include <vector>

#include "nlohmann/json.hpp"
#include "services/inference_engine.h"

namespace tessera::services::http {

// `offset` (in/out): the character offset of the first token; advanced past the last.
nlohmann::json LegacyLogprobs(const std::vector<TokenLogprob>& tokens, int64_t* offset);
nlohmann::json ChatLogprobs(const std::vector<TokenLogprob>& tokens);

}  // namespace tessera::services::http
