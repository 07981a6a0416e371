// The scheduler thread: continuous batching over the active requests (see runtime.h).
//
// Each iteration: drop cancelled requests from the queue, admit queued ones in the admission policy's
// order (deficit round-robin across tenants, or FIFO; fair_queue.h) while a batch slot (and so a pooled
// KV cache) is free and the step's prefill budget allows (the first one always), drop cancelled active
// ones (their KV caches go back to the pool), run ONE
// Model::Forward over every active request (a joining request contributes its whole prompt, the others
// their last sampled token), then sample each request's next token and retire the finished ones.
// With a prefix cache, a joining request first gets the cached blocks of its prompt copied into its KV
// cache and contributes only the rest; its whole blocks are stored after its prefill and at its end.
//
// Chunked prefill (RuntimeOptions::max_step_tokens > 0), the policy between prefill and decode: every
// decoding request runs its one token in every step (decodes are never delayed by prompts); the prompts
// still prefilling share the rest of the step's token budget, at least a quarter of it (so a full batch
// of decodes cannot starve them), in admission order, each taking as many of its remaining positions as
// is left. A prompt split over several steps samples its first token in the step of its last chunk;
// until then its logits are discarded. So a step runs at most max(budget, decodes + budget / 4) tokens
// and a long prompt no longer stalls the decodes beside it for its whole prefill. Without it (0), a
// joining prompt runs whole in its first step.
// Paged KV memory, the policy (kv_cache_pool.h): every request's KV cache takes blocks from one pool.
//  - Admission by free blocks: a request joins only when the pool's free blocks cover what every
//    running request needs for its next step (a decode: the block its next position may open; a
//    prompt: the rest of it and its first token) plus the new request's prompt and first token. Until
//    then it stays first in line (no smaller request overtakes it, so a long prompt is not starved).
//    With an empty batch a request is always admitted (a full context always fits the pool).
//  - Preemption instead of failure: before each step the requests reserve the blocks their positions
//    of this step need, oldest admission first. When the pool runs out, the most recently admitted
//    request is preempted (LIFO, as vLLM does: the oldest requests, closest to finishing, keep going
//    and every request eventually runs alone if it must, so nothing livelocks): its blocks go back to
//    the pool (with a prefix cache, its whole blocks are stored there first, so the recompute is mostly
//    a copy) and it waits in preempted_, readmitted before any new request, oldest first. Recompute
//    rather than swap to host: a recompute costs one prefill of positions already computed, while a
//    swap would need host memory and two copies per block; on this runtime's scale (CPU, or a GPU
//    with prefix-cache memory beside the pool) the prefill is the cheaper and simpler of the two.
//    Readmitted, it prefills its prompt and every generated token but the last (what its cache held)
//    and then decodes the last one, as it would have: its sampler, stop matcher and streamed text are
//    untouched, so the client sees only a pause. Its routing statistics are not counted again for the
//    recomputed positions (the recompute's chunks stop at the last position already counted).
// Everything a request computes lives in its own KV cache, sampler and stop matcher, so its output
// does not depend on who shares the step. A failed step fails its requests, except out of memory in a
// step that admitted prompts: then only the new prompts fail and the decoding requests continue.
#include <algorithm>
#include <limits>

#include "absl/algorithm/container.h"
#include "absl/strings/str_cat.h"
#include "core/runtime/logprobs.h"
#include "core/runtime/request.h"
#include "core/runtime/runtime.h"
#include "core/tokenizer/utf8.h"

namespace tessera::runtime {
namespace {

// Inserts `r` into `requests` (a vector or deque kept in admission order) after every request admitted
// before it.
template <typename Container>
void InsertByAdmission(Container& requests, std::shared_ptr<Request> r) {
  auto at = std::upper_bound(requests.begin(), requests.end(), r->admission,
                             [](int64_t a, const std::shared_ptr<Request>& q) { return a < q->admission; });
  requests.insert(at, std::move(r));
}

}  // namespace

void Runtime::SchedulerLoop() {
  std::vector<std::shared_ptr<Request>> active;  // in admission order (Request::admission)
  for (;;) {
    std::vector<std::shared_ptr<Request>> dropped;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        return stopping_ || (!paused_ && (!queue_.empty() || !preempted_.empty() || !active.empty()));
      });
      if (stopping_) break;
      // Preempted requests whose caller gave up leave here (queued ones leave in Abandon).
      for (auto it = preempted_.begin(); it != preempted_.end();) {
        if ((*it)->cancelled.load()) {
          dropped.push_back(std::move(*it));
          it = preempted_.erase(it);
        } else {
          ++it;
        }
      }
      int64_t budget = options_.max_prefill_tokens_per_step;
      bool admitted = false;
      while ((!preempted_.empty() || !queue_.empty()) && static_cast<int>(active.size()) < options_.max_batch) {
        // Preempted requests first (oldest first), then the admission policy's pick (fair_queue.h); when
        // its prompt does not fit this step's prefill budget or the free KV blocks, it stays first in
        // line for the next step.
        const bool resumed = !preempted_.empty();
        const Request& next = resumed ? *preempted_.front() : **queue_.Peek();
        const int64_t n = static_cast<int64_t>(next.input.size());
        if (admitted && n > budget) break;
        if (!active.empty() && !AdmitByBlocks(next, active)) break;
        std::shared_ptr<Request> r;
        if (resumed) {
          r = std::move(preempted_.front());
          preempted_.pop_front();
        } else {
          r = queue_.Pop();
          r->admission = next_admission_++;
        }
        budget -= n;
        admitted = true;
        r->cache = kv_pool_->Acquire();  // never null: the pool has max_batch caches
        // Keep `active` in admission order: the reservation order and the preemption victim follow it.
        InsertByAdmission(active, std::move(r));
      }
    }
    for (auto& r : dropped) Finish(*r, absl::CancelledError("generation cancelled by the caller"));
    for (auto& r : active) {
      if (r->cancelled.load()) Finish(*r, absl::CancelledError("generation cancelled by the caller"));
    }
    std::erase_if(active, [](const std::shared_ptr<Request>& r) { return r->finished; });
    active_count_.store(static_cast<int64_t>(active.size()));
    if (active.empty()) continue;
    Step(active);
    std::erase_if(active, [](const std::shared_ptr<Request>& r) { return r->finished || r->cache == nullptr; });
    active_count_.store(static_cast<int64_t>(active.size()));
  }
  for (auto& r : active) Finish(*r, absl::UnavailableError("the runtime is shutting down"));
  active_count_.store(0);
}

int64_t Runtime::BlocksNeededForNextStep(const Request& r) const {
  // A decode adds one position; a prompt (or the rest of it) is followed by its first token. A request
  // waiting for admission holds no cache (and is never `prefilled`).
  const int64_t next = r.prefilled ? r.cache->length() + 1 : static_cast<int64_t>(r.input.size()) + 1;
  const int64_t held = r.cache != nullptr ? static_cast<int64_t>(r.cache->blocks().size()) : 0;
  // A shared block the next write lands in (a prompt restored up to its last token) is copied first.
  const int64_t copy = r.cache != nullptr ? r.cache->BlocksToCopyBeforeWrite() : 0;
  return copy + std::max<int64_t>(0, kv_pool_->BlocksFor(std::min(next, kv_pool_->capacity())) - held);
}

bool Runtime::AdmitByBlocks(const Request& r, const std::vector<std::shared_ptr<Request>>& active) const {
  int64_t needed = BlocksNeededForNextStep(r);
  for (const auto& a : active) needed += BlocksNeededForNextStep(*a);
  // Blocks only the prefix cache holds count as available: the pool reclaims them on demand.
  return needed <= kv_pool_->available_blocks();
}

void Runtime::Preempt(const std::shared_ptr<Request>& rp) {
  Request& r = *rp;
  // Its whole blocks into the prefix cache first: the recompute then restores most of them.
  if (prefix_cache_) StorePrefix(r);
  r.input = r.prompt;
  if (r.tokens.size() > 1) r.input.insert(r.input.end(), r.tokens.begin(), r.tokens.end() - 1);
  kv_pool_->Release(r.cache);
  r.cache = nullptr;
  r.prefilled = false;
  r.prefix_checked = false;
  r.prefill_pos = 0;
  r.preemptions += 1;
  preemptions_.fetch_add(1);
  std::lock_guard<std::mutex> lock(mu_);
  InsertByAdmission(preempted_, rp);
}

void Runtime::Step(std::vector<std::shared_ptr<Request>>& active) {
  const ModelConfig& c = model_->config();
  ForwardOptions opt;
  opt.logits = LogitsMode::kLast;
  StepInfo info;
  if (prefix_cache_) RestorePrefixes(active);
  // What each request runs this step (see the file comment): a decoding one its last token; a prompt
  // its next positions, all of them unless chunked prefill is on, in which case the decodes go first and
  // the prompts share what the step's token budget leaves (at least a quarter of it), oldest first.
  int64_t prefill_left = std::numeric_limits<int64_t>::max();
  if (options_.max_step_tokens > 0) {
    const int64_t decodes = absl::c_count_if(active, [](const std::shared_ptr<Request>& r) { return r->prefilled; });
    prefill_left = std::max(options_.max_step_tokens - decodes, std::max<int64_t>(1, options_.max_step_tokens / 4));
  }
  std::vector<size_t> in_step;  // indices into `active`, in batch order
  std::vector<int64_t> chunk;    // prompt positions each runs (0: decoding)
  std::vector<SequenceInput> batch;
  // Requests are visited in admission order and reserve their KV blocks for this step as they go; when
  // the pool runs out, the youngest request still active is preempted (the policy: file comment), which
  // is never one already placed in this step's batch.
  size_t live = active.size();  // active[live..] were preempted in this step
  for (size_t i = 0; i < live; ++i) {
    Request& r = *active[i];
    absl::Span<const int32_t> tokens;
    int64_t take = 0;
    if (r.prefilled) {
      tokens = absl::MakeConstSpan(&r.last_token, 1);
    } else {
      // Positions already in the KV cache (restored from the prefix cache, earlier chunks) are skipped.
      take = std::min(static_cast<int64_t>(r.input.size()) - r.prefill_pos, prefill_left);
      // A recompute's chunk ends where the routing already counted ends (Request::routed).
      if (r.prefill_pos < r.routed) take = std::min(take, r.routed - r.prefill_pos);
      if (take <= 0) continue;  // the budget is spent: this prompt waits for the next step
      tokens = absl::MakeConstSpan(r.input).subspan(r.prefill_pos, take);
    }
    const int64_t target = r.cache->length() + static_cast<int64_t>(tokens.size());
    bool preempted_self = false;
    while (!preempted_self && !r.cache->Reserve(target).ok()) {
      // The youngest still active; this one itself when nobody younger is left (it waits instead).
      const size_t victim = live - 1;
      Preempt(active[victim]);
      --live;
      info.preempted += 1;
      preempted_self = victim == i;
    }
    if (preempted_self) continue;
    if (!r.prefilled) {
      prefill_left -= take;
      info.prefill_sequences += 1;
    }
    info.tokens += static_cast<int64_t>(tokens.size());
    in_step.push_back(i);
    chunk.push_back(take);
    batch.push_back(SequenceInput{tokens, r.overlay.get(), r.cache});
    opt.collect_routing = opt.collect_routing || r.collect_routing;
  }
  info.sequences = static_cast<int64_t>(batch.size());
  if (info.prefill_sequences == 0) opt.moe_routing = options_.decode_routing;
  absl::StatusOr<ForwardResult> fr;
  absl::StatusOr<std::vector<float>> logits;
  {
    std::lock_guard<std::mutex> lock(*device_mu_);
    fr = model_->Forward(batch, opt);
    if (fr.ok()) logits = model_->backend()->ToHostF32(fr->logits);
  }
  info.step = steps_.fetch_add(1) + 1;
  const int64_t n = static_cast<int64_t>(batch.size());
  batched_sequences_.fetch_add(n);
  if (n > max_batch_seen_.load()) max_batch_seen_.store(n);  // only this thread writes it
  if (fr.ok() && !logits.ok()) fr = logits.status();
  if (!fr.ok()) {
    // Out of memory in a step that admitted prompts: their prefill is what needed the memory (a step's
    // activations grow with its tokens; decoding adds one per sequence), so only those requests fail; the
    // decoding ones stay: Forward advances KV caches only on success, so the next step runs them again
    // as if this one had not happened. Any other failure fails the whole step.
    const bool only_prompts = fr.status().code() == absl::StatusCode::kResourceExhausted &&
                              info.prefill_sequences > 0 && info.prefill_sequences < n;
    const absl::Status failed =
        only_prompts ? absl::ResourceExhaustedError(absl::StrCat(
                           "not enough device memory to prefill this prompt beside the running batch: ",
                           fr.status().message()))
                     : absl::Status(fr.status().code(), absl::StrCat("decode step failed: ", fr.status().message()));
    for (size_t i : in_step) {
      if (!only_prompts || !active[i]->prefilled) Finish(*active[i], failed);
    }
    info.ok = false;
    if (options_.on_step) options_.on_step(info);
    return;
  }
  // Prompts advance by their chunk; those now complete sample their first token below (and their blocks
  // go to the prefix cache); those still incomplete produced no token this step.
  std::vector<bool> sample(in_step.size(), true);
  for (size_t b = 0; b < in_step.size(); ++b) {
    Request& r = *active[in_step[b]];
    // Positions [start, end) ran; those below `routed` were counted before a preemption.
    const int64_t end = r.cache->length(), start = end - static_cast<int64_t>(batch[b].tokens.size());
    if (start >= r.routed) {
      if (r.collect_routing) r.routing.Merge(fr->routing[b]);
      r.routed = end;
    }
    if (r.prefilled) continue;
    r.prefill_pos += chunk[b];
    if (r.prefill_pos < static_cast<int64_t>(r.input.size())) {
      sample[b] = false;
      continue;
    }
    if (prefix_cache_) StorePrefix(r);  // the prompt's blocks, for the next request sharing them
    r.prefilled = true;
    // A preempted request's recompute ends where its cache ended before: its last token, already
    // sampled, is what it decodes next.
    if (!r.tokens.empty()) sample[b] = false;
  }
  const int64_t vocab = c.vocab_size;
  const int64_t producible = std::min<int64_t>(vocab, tokenizer_->vocab_size());
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (size_t b = 0; b < in_step.size(); ++b) {
    if (!sample[b]) continue;
    Request& r = *active[in_step[b]];
    float* row = logits->data() + static_cast<int64_t>(b) * vocab;
    // The normalizer of the raw logits, before the masking below (logprobs.h).
    const double log_z = r.want_logprobs ? LogSumExp(absl::MakeConstSpan(row, vocab)) : 0.0;
    // Ids the tokenizer cannot produce are never sampled (as in tessera::Generate).
    for (int64_t j = producible; j < vocab; ++j) row[j] = neg_inf;
    for (int32_t special : {tokenizer_->pad_id(), tokenizer_->bos_id()}) {
      if (special >= 0 && special < vocab && absl::c_find(r.end_ids, special) == r.end_ids.end()) {
        row[special] = neg_inf;
      }
    }
    const int32_t token = r.sampler.Sample(absl::MakeConstSpan(row, vocab));
    if (token < 0) {
      Finish(r, absl::InternalError("sampler returned no token"));
      continue;
    }
    if (absl::c_find(r.end_ids, token) != r.end_ids.end()) {
      Complete(r, FinishReason::kEos);
      continue;
    }
    r.tokens.push_back(token);
    if (r.want_logprobs) r.logprobs.push_back(TokenLogprobOf(absl::MakeConstSpan(row, vocab), log_z, token, r.top_logprobs));
    tokens_generated_.fetch_add(1);
    // Incremental detokenization: the text this id completes (tokenizer/incremental_decoder.h), so the
    // streamed text is Decode(generated ids) (a Metaspace stream keeps no leading space).
    r.stop.Feed(r.detok.Push(token));
    if (r.stop.stopped()) {
      Complete(r, FinishReason::kStop);
    } else if (static_cast<int64_t>(r.tokens.size()) >= r.max_tokens ||
               r.cache->length() >= r.cache->capacity()) {
      Complete(r, FinishReason::kLength);
    } else {
      r.last_token = token;
      EmitDelta(r, /*final=*/false);
    }
  }
  if (options_.on_step) options_.on_step(info);
}

void Runtime::RestorePrefixes(std::vector<std::shared_ptr<Request>>& active) {
  std::lock_guard<std::mutex> lock(*device_mu_);
  for (auto& r : active) {
    if (r->prefilled || r->prefix_checked) continue;
    r->prefix_checked = true;
    // Keyed by the content digest of the weights that will compute this request (see prefix_cache.h).
    r->prefix_root = prefix_cache_->Root(options_.backbone_digest, r->overlay ? r->overlay->digest() : "");
    // At most all but the last prompt token: its logits are what the prefill must produce.
    absl::StatusOr<int64_t> n = prefix_cache_->Restore(r->prefix_root, r->input,
                                                       static_cast<int64_t>(r->input.size()) - 1, *r->cache);
    // A failed copy leaves the cache empty: the prompt is prefilled whole, as on a miss.
    r->prefill_pos = n.ok() ? *n : 0;
    // What the client is told counts the prompt's first admission (a recompute restores its own blocks).
    if (r->preemptions == 0) r->cached_tokens = r->prefill_pos;
  }
}

void Runtime::StorePrefix(Request& r) {
  if (r.cache == nullptr || !r.prefix_checked) return;
  // The cache holds the prompt, then each generated token once it was fed back.
  std::vector<int32_t> ids = r.prompt;
  const int64_t fed = std::min<int64_t>(r.cache->length() - static_cast<int64_t>(r.prompt.size()),
                                        static_cast<int64_t>(r.tokens.size()));
  if (fed > 0) ids.insert(ids.end(), r.tokens.begin(), r.tokens.begin() + fed);
  std::lock_guard<std::mutex> lock(*device_mu_);
  // Not storing is only a missed reuse later; the request's own result does not depend on it.
  (void)prefix_cache_->Store(r.prefix_root, ids, *r.cache);
}

void Runtime::EmitDelta(Request& r, bool final) {
  if (!r.streaming) return;
  const std::string& text = r.stop.text();
  size_t limit = final ? r.stop.keep_bytes() : r.stop.safe_bytes();
  if (!final) {
    if (limit <= r.emitted) return;
    // Hold back a trailing incomplete UTF-8 character until its remaining bytes arrive.
    limit = r.emitted + Utf8CompletePrefixLength(std::string_view(text).substr(r.emitted, limit - r.emitted));
    if (limit == r.emitted) return;
  }
  // Tokens travel with the text released after them; the final call hands over the rest.
  const bool more_logprobs = r.logprobs_emitted < r.logprobs.size();
  if (limit <= r.emitted && !more_logprobs) return;
  {
    std::lock_guard<std::mutex> lock(r.mu);
    if (limit > r.emitted) r.pending_delta.append(text, r.emitted, limit - r.emitted);
    r.pending_logprobs.insert(r.pending_logprobs.end(), r.logprobs.begin() + r.logprobs_emitted, r.logprobs.end());
  }
  r.emitted = std::max(limit, r.emitted);
  r.logprobs_emitted = r.logprobs.size();
  r.cv.notify_all();
}

void Runtime::Complete(Request& r, FinishReason reason) {
  GenerateResult& out = r.result;  // read by the caller only after Finish publishes `done`
  // Text the decoder still held (a character the last ids never completed): Decode(all ids) exactly. A
  // stop string it completes still stops (and cuts) the output.
  if (!r.stop.stopped() && r.stop.Feed(r.detok.Finish())) reason = FinishReason::kStop;
  out.text = std::string(r.stop.output());
  out.finish_reason = reason;
  out.version = r.version;
  out.sha256 = r.sha256;
  out.prompt_tokens = static_cast<int>(r.prompt.size());
  out.completion_tokens = static_cast<int>(r.tokens.size());
  out.tokens = r.tokens;
  out.cached_tokens = static_cast<int>(r.cached_tokens);
  out.logprobs = r.logprobs;
  if (r.collect_routing) out.routing = SummarizeRouting(r.routing);
  // Prompt and generated positions: a next turn of the conversation starts with them.
  if (prefix_cache_) StorePrefix(r);
  EmitDelta(r, /*final=*/true);
  Finish(r, absl::OkStatus());
}

void Runtime::Finish(Request& r, absl::Status status) {
  if (r.finished) return;
  r.finished = true;
  kv_pool_->Release(r.cache);
  r.cache = nullptr;
  // The request no longer needs its version: let evicted buffers and old tables go.
  r.overlay.reset();
  r.table.reset();
  {
    std::lock_guard<std::mutex> lock(r.mu);
    r.status = std::move(status);
    r.done = true;
  }
  r.cv.notify_all();
}

}  // namespace tessera::runtime
