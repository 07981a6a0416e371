// Request: the state of one Generate call shared by its caller's thread and the scheduler thread.
// Internal to core/runtime.
//
// Ownership: a shared_ptr held by the caller (until Generate returns) and by the scheduler (while
// queued or active). Fields under "scheduler only" are touched only by the scheduler thread once the
// request is queued; the hand-off fields are guarded by `mu`.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/model/kv_cache.h"
#include "core/model/model.h"
#include "core/runtime/expert_table.h"
#include "core/runtime/runtime.h"
#include "core/sampling/sampler.h"
#include "core/sampling/stop_matcher.h"
#include "core/tokenizer/incremental_decoder.h"

namespace tessera::runtime {

struct Request {
  Request(const SamplingParams& sampling, std::vector<std::string> stops, const Tokenizer& tokenizer)
      : sampler(sampling), stop(std::move(stops)), detok(tokenizer) {}

  // Fixed when queued.
  std::string tenant;
  int64_t version = 0;
  std::string sha256;
  std::shared_ptr<const ExpertTable::Snapshot> table;  // the table it started with
  std::shared_ptr<const ExpertOverlay> overlay;        // kept alive until the request ends
  std::vector<int32_t> prompt;
  int max_tokens = 0;
  std::vector<int32_t> end_ids;  // the tokenizer's eos_ids() and the request's GenerateParams::end_ids
  bool collect_routing = false;
  bool streaming = false;  // the caller wants deltas
  bool want_logprobs = false;  // GenerateParams::logprobs
  int top_logprobs = 0;

  // Scheduler only.
  Sampler sampler;
  StopMatcher stop;
  IncrementalDecoder detok;  // generated ids -> text (stop.text() is what it returned)
  KvCache* cache = nullptr;
  bool prefilled = false;
  // The ids to prefill: the prompt; after a preemption, the prompt and every generated token but the
  // last (what the KV cache held: the last is decoded next, as before the preemption).
  std::vector<int32_t> input;
  int64_t admission = -1;   // order of first admission (preempted requests keep theirs)
  int64_t preemptions = 0;  // times this request was preempted
  // Positions whose routing is in `routing`: a recompute after a preemption runs positions below it
  // again and must not count them twice (its chunks end at this mark, scheduler.cc).
  int64_t routed = 0;
  bool prefix_checked = false;  // the prefix cache was consulted (it is, once, before the prefill)
  int64_t cached_tokens = 0;    // prompt positions restored from the prefix cache (not prefilled)
  int64_t prefill_pos = 0;      // `input` positions in the KV cache (restored, then prefilled chunks)
  PrefixCache::Hash prefix_root{};  // the prefix cache's key root for (backbone, version content)
  bool finished = false;
  int32_t last_token = 0;
  std::vector<int32_t> tokens;
  size_t emitted = 0;  // bytes of stop.output() already handed to `pending_delta`
  std::vector<TokenLogprob> logprobs;  // one per id of `tokens`, with `logprobs`
  size_t logprobs_emitted = 0;         // entries already handed to `pending_logprobs`
  RoutingStats routing;

  // Hand-off between the threads.
  std::atomic<bool> cancelled{false};
  std::mutex mu;
  std::condition_variable cv;
  std::string pending_delta;
  std::vector<TokenLogprob> pending_logprobs;
  bool done = false;
  absl::Status status;
  GenerateResult result;
};

}  // namespace tessera::runtime
