// Generate: prefill + incremental decode of one request with a KV cache.
//
//   prefill: Forward(prompt, overlay, cache) -> last logits
//   loop:    mask ids the tokenizer cannot produce (>= tokenizer vocab, PAD, BOS) -> Sampler ->
//            EOS (if stop_at_eos)         -> finish EOS  (EOS not part of the output)
//            append token, feed the text it completes (IncrementalDecoder: the text so far is always
//            a prefix of Decode(generated ids)) to the StopMatcher -> stop string seen -> finish STOP
//                                                   (output cut before the stop string)
//            max_tokens reached or the context is full -> finish LENGTH
//            Forward([token], overlay, cache) -> next logits
// Determinism: the same model, request (prompt, overlay, sampling params incl. seed) give the same
// tokens. Streaming: `on_chunk` receives each token and the newly emitted text, which never includes
// bytes that might still become part of a stop string (StopMatcher::safe_bytes); returning false
// cancels (finish CANCELLED). The chunks' text concatenates to the result's text, which is Decode(the
// generated ids) (cut before a stop string): transformers' decode(generated, skip_special_tokens=True),
// e.g. without the leading space a SentencePiece '▁' would give per token. Memory: one KV cache of min(prompt + max_tokens, max_position) positions.
//
// Batched serving (continuous batching) is the runtime's job, built on Model::Forward with one KV
// cache per request; this function is the single-request reference path (CLI, demo, tests).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/model.h"
#include "core/sampling/sampler.h"
#include "core/tokenizer/tokenizer.h"

namespace tessera {

enum class FinishReason { kLength, kStop, kEos, kCancelled };
const char* FinishReasonName(FinishReason r);  // "length", "stop", "eos", "cancelled"

struct GenerateRequest {
  std::vector<int32_t> prompt;             // token ids, >= 1 (include BOS yourself if wanted)
  const ExpertOverlay* overlay = nullptr;  // tenant overlay (nullptr = base)
  SamplingParams sampling;                 // temperature 0 = greedy
  int64_t max_tokens = 64;                 // >= 1
  std::vector<std::string> stop;           // stop strings (matched on decoded bytes)
  bool stop_at_eos = true;
  bool return_routing = false;             // fill GenerateResult::routing (prompt + generated tokens)
};

struct StreamChunk {
  int32_t token = 0;
  float logprob = 0.0f;  // log p(token) under the model (before temperature / top-k / top-p)
  std::string text;      // bytes newly safe to emit (may be empty; ends mid UTF-8 character only in the
                         // final chunk when the generated ids end inside one)
};
using StreamCallback = std::function<bool(const StreamChunk&)>;

struct GenerateResult {
  std::vector<int32_t> tokens;    // generated ids (no prompt, no EOS)
  std::vector<float> logprobs;    // per generated id
  std::string text;               // decoded output, cut before a matched stop string
  FinishReason finish_reason = FinishReason::kLength;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;  // len(tokens)
  RoutingStats routing;           // when return_routing
};

absl::StatusOr<GenerateResult> Generate(const Model& model, const Tokenizer& tokenizer,
                                        const GenerateRequest& request,
                                        const StreamCallback& on_chunk = nullptr);

// Convenience: encodes `prompt` (prepending BOS when add_bos) into request.prompt, then Generate.
absl::StatusOr<GenerateResult> GenerateText(const Model& model, const Tokenizer& tokenizer,
                                            std::string_view prompt, GenerateRequest request,
                                            bool add_bos = true, const StreamCallback& on_chunk = nullptr);

}  // namespace tessera
