// Generate (see generate.h).
#include "core/model/generate.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/sampling/stop_matcher.h"
#include "core/tokenizer/incremental_decoder.h"
#include "core/util/status_macros.h"

namespace tessera {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop";
    case FinishReason::kEos: return "eos";
    case FinishReason::kCancelled: return "cancelled";
  }
  return "?";
}

absl::StatusOr<GenerateResult> Generate(const Model& model, const Tokenizer& tokenizer,
                                        const GenerateRequest& req, const StreamCallback& on_chunk) {
  const ModelConfig& c = model.config();
  Backend* be = model.backend();
  if (req.prompt.empty()) return absl::InvalidArgumentError("Generate: empty prompt");
  if (req.max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("Generate: max_tokens must be >= 1, got ", req.max_tokens));
  }
  const int64_t prompt_len = static_cast<int64_t>(req.prompt.size());
  if (prompt_len >= c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("Generate: prompt of ", prompt_len,
                                                   " tokens leaves no room in the context of ",
                                                   c.max_position_embeddings));
  }
  ASSIGN_OR_RETURN(Sampler sampler, Sampler::Create(req.sampling));
  const int64_t capacity = std::min<int64_t>(prompt_len + req.max_tokens, c.max_position_embeddings);
  ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache,
                   KvCache::Create(c, capacity, be, model.weights().matrix_dtype()));

  GenerateResult out;
  out.prompt_tokens = prompt_len;
  if (req.return_routing) out.routing.Init(c.num_layers, c.num_experts);
  ForwardOptions opt;
  opt.logits = LogitsMode::kLast;
  opt.collect_routing = req.return_routing;
  const int64_t producible = std::min<int64_t>(c.vocab_size, tokenizer.vocab_size());
  StopMatcher stops(req.stop);
  IncrementalDecoder detok(tokenizer);
  size_t emitted = 0;

  std::vector<int32_t> step(req.prompt);
  while (true) {
    SequenceInput in[1] = {{step, req.overlay, cache.get()}};
    ASSIGN_OR_RETURN(ForwardResult fr, model.Forward(in, opt));
    if (req.return_routing) out.routing.Merge(fr.routing[0]);
    ASSIGN_OR_RETURN(std::vector<float> logits, be->ToHostF32(fr.logits));
    // Ids the tokenizer cannot produce (padding rows of the vocabulary, PAD, BOS) are never sampled.
    const float neg_inf = -std::numeric_limits<float>::infinity();
    for (int64_t i = producible; i < c.vocab_size; ++i) logits[i] = neg_inf;
    for (int32_t special : {tokenizer.pad_id(), tokenizer.bos_id()}) {
      if (special >= 0 && special < c.vocab_size && special != tokenizer.eos_id()) logits[special] = neg_inf;
    }
    const int32_t token = sampler.Sample(logits);
    if (token < 0) return absl::InternalError("Generate: sampler returned no token");
    // log-softmax of the (masked) model distribution at the chosen id.
    double mx = neg_inf, z = 0.0;
    for (float x : logits) mx = std::max(mx, static_cast<double>(x));
    for (float x : logits) z += std::exp(static_cast<double>(x) - mx);
    const float logprob = static_cast<float>(logits[token] - mx - std::log(z));

    if (req.stop_at_eos && token == tokenizer.eos_id()) {
      out.finish_reason = FinishReason::kEos;
      break;
    }
    out.tokens.push_back(token);
    out.logprobs.push_back(logprob);
    stops.Feed(detok.Push(token));  // incremental detokenization (tokenizer/incremental_decoder.h)
    StreamChunk chunk;
    chunk.token = token;
    chunk.logprob = logprob;
    const size_t safe = stops.safe_bytes();
    if (safe > emitted) {
      chunk.text = std::string(stops.text().substr(emitted, safe - emitted));
      emitted = safe;
    }
    if (on_chunk && !on_chunk(chunk)) {
      out.finish_reason = FinishReason::kCancelled;
      break;
    }
    if (stops.stopped()) {
      out.finish_reason = FinishReason::kStop;
      break;
    }
    if (static_cast<int64_t>(out.tokens.size()) >= req.max_tokens || cache->length() >= capacity) {
      out.finish_reason = FinishReason::kLength;
      break;
    }
    step.assign(1, token);
  }
  // What the decoder still held (an incomplete character at the end), then what the stop matcher held
  // back (a tail that did not become a stop string).
  if (!stops.stopped() && stops.Feed(detok.Finish()) && out.finish_reason != FinishReason::kCancelled) {
    out.finish_reason = FinishReason::kStop;
  }
  if (on_chunk && out.finish_reason != FinishReason::kCancelled && stops.keep_bytes() > emitted) {
    StreamChunk tail;
    tail.token = out.tokens.empty() ? -1 : out.tokens.back();
    tail.logprob = 0.0f;
    tail.text = std::string(stops.text().substr(emitted, stops.keep_bytes() - emitted));
    on_chunk(tail);
  }
  out.text = std::string(stops.output());
  out.completion_tokens = static_cast<int64_t>(out.tokens.size());
  return out;
}

absl::StatusOr<GenerateResult> GenerateText(const Model& model, const Tokenizer& tokenizer,
                                            std::string_view prompt, GenerateRequest request, bool add_bos,
                                            const StreamCallback& on_chunk) {
  request.prompt.clear();
  if (add_bos) request.prompt.push_back(tokenizer.bos_id());
  std::vector<int32_t> ids = tokenizer.Encode(prompt);
  request.prompt.insert(request.prompt.end(), ids.begin(), ids.end());
  return Generate(model, tokenizer, request, on_chunk);
}

}  // namespace tessera
