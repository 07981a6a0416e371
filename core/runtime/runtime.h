// Runtime: serves Generate and Score for many tenants on one frozen backbone, with continuous
// batching, per-tenant expert overlays and hot swap of live versions.
//
// Pieces (each in its own file): ExpertTable (tenant -> live version, published by RCU),
// OverlayCache (versions in a device tier, a host tier and on disk, each tier bounded by bytes, LRU),
// KvCachePool (paged KV memory: one pool of blocks shared by the batch's sequences),
// and the scheduler (scheduler.cc): one thread that repeatedly runs one Model::Forward over every
// active request — prompts of requests that just joined (prefill) and the last token of the others
// (decode) in the same batch, each with its own KV cache and its own tenant's overlay — samples each
// request's next token, and lets finished requests leave and waiting ones join before the next step.
//
// Request lifecycle (Generate, on the caller's thread):
//   resolve the version: pinned, or the table's live entry, or (tenant not seen yet) the source's
//   live pointer -> tokenize (BOS + prompt) -> enqueue (queue full: UNAVAILABLE; the tenant's share
//   full: RESOURCE_EXHAUSTED) -> wait for deltas / completion, or cancellation / the deadline.
//   Enqueue: when the version's overlay is on the device tier the request goes straight into the
//   admission queue; otherwise it waits aside while a loader thread (overlay_loader_threads of them)
//   prefetches the overlay -- a promotion from the host tier or a load from disk (overlay_cache.h) --
//   and joins the admission queue when the overlay is ready (or finishes with the load's error, e.g.
//   NOT_FOUND). The scheduler never waits for a load: it keeps admitting and decoding the other
//   tenants' requests meanwhile, so a cold tenant's first request waits for its own load only.
//   Requests waiting for a load count against max_queue / max_queue_per_tenant like queued ones.
// Admission: the queue is per tenant; a free batch slot goes to the next request under
// options.admission (deficit round-robin across tenants by default, fair_queue.h), so a tenant flooding
// the server delays another's request by about one slot's turnover, not by the whole backlog.
// The request keeps the table snapshot and its overlay's shared_ptr until it finishes, so a SetLive
// or an eviction meanwhile never changes what serves it.
//
// Generation rules (the same as tessera::Generate in core/model/generate.h, the single-request
// reference): prompt = BOS + tokenizer.Encode(prompt). Ids the tokenizer cannot produce (rows beyond
// its vocabulary, PAD, BOS) get -inf logits; the request's own Sampler (seeded by params.seed) picks
// the token; EOS ends with kEos (not part of the output, not counted); each other token is counted,
// the text it completes (IncrementalDecoder) fed to a StopMatcher (stop seen: kStop, output cut before
// it); max_tokens reached or the KV cache full: kLength. The text (and the streamed deltas, which
// concatenate to it) is the tokenizer's Decode of the generated ids, cut before a stop string.
// Determinism: a request's tokens and routing depend only on (tenant version, prompt, params), not on
// what else is in the batch: Model::Forward computes each sequence independently, the prompt is
// always prefilled in one piece (its part not restored from the prefix cache), and sampling uses
// per-request RNG state. With chunked prefill (max_step_tokens) a prompt's chunks depend on what else
// runs in the step, which changes only float summation order (the caveat below). Caveat: "independently"
// holds up to float summation order inside BLAS, which can vary with the batch's shape (~1e-6
// relative), so the reported routing entropy may differ in its last digits, and a token or expert
// choice could only flip where two candidates tie within that noise (not observed in the tests,
// which compare batched and solo runs token for token). The same holds for a prompt whose first
// positions came from the prefix cache (prefix_cache.h): the restored keys/values are bit for bit
// what was computed for those tokens, and the rest differs from a cold prefill only in that order.
//
// Paged KV memory (kv_cache_pool.h): a request's KV cache takes blocks of kv_block_tokens positions
// from one pool of kv_blocks blocks as it grows and returns them when it ends, so short and long
// requests share the memory instead of each holding a slab of the whole context. The scheduler admits
// a request only when the blocks every running request needs for its next step, plus the new prompt's
// (and its first token's), are free or held only by the prefix cache (which gives them back on demand);
// when decodes outgrow the pool anyway it preempts (scheduler.cc):
// the most recently admitted request gives its blocks back and waits, ahead of every new request, to
// recompute its prompt and generated tokens -- its output is the same (up to the float caveat above:
// the positions are recomputed as one prefill instead of one by one), its sampler state is kept.
//
// Prefix cache (RuntimeOptions::prefix_cache_bytes > 0): when a request joins the batch, the whole
// blocks of its prompt found in the cache under (backbone digest, its version's content digest) become
// the first blocks of its KV cache, shared, not copied (all but the last prompt token at most) and only
// the rest is prefilled;
// after the prefill, and when it finishes, its whole blocks are stored (a next turn of a conversation
// finds the previous answer too). GenerateResult::cached_tokens says how many positions were restored.
//
// Streaming: text is handed to on_delta on the caller's thread (never the scheduler's, so a slow
// client cannot stall the batch), only once the StopMatcher says it cannot become part of a stop
// string and (until the end) without a trailing incomplete UTF-8 character. on_delta returning false
// cancels: the request leaves the batch at the next step and Generate returns CANCELLED.
//
// Backend use is serialized by one mutex (the scheduler's steps, Score, and overlay uploads): backends
// are not safe for concurrent calls (the CUDA one shares a stream and an upload ring). The exception is
// the overlay tiers' loads and copies on the CPU backend, whose ops are safe from several threads: they
// run beside the steps (OverlayCache::DeviceLock), so a cold tenant's load does not stall the batch.
// Other users of the same backend (a trainer) pass the same mutex in RuntimeOptions::device_mutex.
//
// Lifetime: the runtime must outlive every Generate/Score/SetLive call in flight (Shutdown first
// makes pending calls return, then destroy).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/model/model.h"
#include "core/runtime/expert_table.h"
#include "core/runtime/fair_queue.h"
#include "core/runtime/kv_cache_pool.h"
#include "core/runtime/logprobs.h"
#include "core/runtime/overlay_cache.h"
#include "core/runtime/prefix_cache.h"
#include "core/runtime/routing.h"
#include "core/runtime/version_source.h"
#include "core/tokenizer/tokenizer.h"

namespace tessera::runtime {

// What one scheduler step ran (for metrics: batch sizes, prefill vs decode tokens).
struct StepInfo {
  int64_t step = 0;               // 1-based
  int64_t sequences = 0;          // requests in the batch
  int64_t prefill_sequences = 0;  // of those, joining with their prompt
  int64_t tokens = 0;             // tokens run through the model
  int64_t preempted = 0;          // requests preempted before this step for want of KV blocks
  bool ok = true;                 // false: the forward failed (its requests got the error; out of memory
                                  // with prompts joining: only those, see scheduler.cc)
};

struct RuntimeOptions {
  int max_batch = 16;              // sequences in one step (= KV caches in the pool)
  int64_t kv_capacity = 1024;      // positions per request (prompt + completion); <= max_position_embeddings
                                   // (the server sizes it with PlanContext, context_plan.h)
  // Paged KV memory (kv_cache_pool.h): positions per block, and blocks in the pool shared by every
  // sequence (>= ceil(kv_capacity / kv_block_tokens), so a request alone always fits). 0 = max_batch *
  // ceil(kv_capacity / kv_block_tokens): every slot at full context, no preemption ever needed.
  int64_t kv_block_tokens = 16;
  int64_t kv_blocks = 0;
  // Appended to the INVALID_ARGUMENT a prompt longer than kv_capacity gets: what raises the capacity
  // (ContextPlan::RaiseHint, naming the server flag). Empty: the error says only the numbers.
  std::string kv_capacity_hint;
  int max_queue = 256;             // waiting requests; one more -> UNAVAILABLE
  // Waiting requests of one tenant; one more -> RESOURCE_EXHAUSTED (so one tenant cannot fill max_queue
  // and lock the others out).
  int max_queue_per_tenant = 64;
  // Which waiting request takes a free batch slot (fair_queue.h): kFair = deficit round-robin across
  // tenants, each request costing prompt + max_tokens positions and each tenant credited
  // admission_quantum * weight per turn; kFifo = arrival order. tenant_weights: absent tenants weigh 1.
  AdmissionPolicy admission = AdmissionPolicy::kFair;
  int64_t admission_quantum = 64;
  std::map<std::string, int64_t> tenant_weights;
  // The overlay tiers (overlay_cache.h): bytes of tenant overlays kept on the device (the server's
  // --overlay-device-bytes, alias --expert-cache-bytes) and as host copies ready to upload
  // (--overlay-host-bytes; 0 = no host tier: an overlay leaving the device is dropped to disk).
  int64_t overlay_cache_bytes = int64_t{256} << 20;
  int64_t overlay_host_bytes = 0;
  // Threads that prefetch overlays of queued requests (promotions and disk loads), >= 1: a slow load
  // delays only the requests waiting for it and, beyond this many loads at once, later loads.
  int overlay_loader_threads = 2;
  // Tenant overlays live in a slab pool allocated at start-up (OverlaySlabPool): one slab per expert slot,
  // enough for overlay_cache_bytes plus `max_batch` slots of headroom for overlays that in-flight requests
  // still hold after eviction. false: every load allocates from the backend.
  bool overlay_slab_pool = true;
  // Prompt tokens admitted into one step (at least one request is always admitted): bounds how long
  // a step with new prompts stalls the decodes running beside them.
  int64_t max_prefill_tokens_per_step = 4096;
  // Chunked prefill: at most this many tokens run through the model in one step. Decoding requests run
  // first (one token each); prompts share the rest (at least a quarter), split over steps as needed (the
  // policy: scheduler.cc). 0 = off: a joining prompt runs whole in its first step.
  int64_t max_step_tokens = 0;
  // Fill GenerateResult/ScoreResult::routing for every request, not only those asking (for metrics).
  bool always_collect_routing = false;
  // How steps with no prompt in them (decode only: one token per sequence) group the MoE assignments.
  // kOnDevice skips the per-layer top-k read-back (model.h); steps with prompts always use the host plan,
  // whose cuBLAS grouped GEMM suits large batches.
  MoeRouting decode_routing = MoeRouting::kHostPlan;
  // The scheduler admits nothing until Resume() (staged start-up; tests use it to fix a batch's
  // composition).
  bool start_paused = false;
  // Called on the scheduler thread after every step. Must be quick and must not call Generate (the
  // scheduler would wait on itself); Pause() is allowed (tests use it to stop at an exact step).
  std::function<void(const StepInfo&)> on_step;
  // Serializes every backend call the runtime makes; share it with anything else using the same
  // backend concurrently. nullptr = the runtime's own. Must outlive the runtime.
  std::mutex* device_mutex = nullptr;
  // Prefix cache (prefix_cache.h): bytes of device memory for KV blocks of computed prompts, reused by
  // later requests whose prompt starts with the same tokens under the same backbone and version content.
  // 0 = off. The KV pool grows by this many bytes of blocks at start-up; the cache references up to that
  // many blocks of it, shared with the sequences reading them, and gives back the ones no sequence holds
  // when sequences need blocks. Its blocks are the pool's (kv_block_tokens positions).
  int64_t prefix_cache_bytes = 0;
  // The backbone's digest (the server's model sha256), part of every prefix-cache key.
  std::string backbone_digest;
};

struct GenerateParams {
  std::string prompt;              // raw text: the tokenizer's default special tokens are added (e.g. BOS)
  std::vector<int32_t> prompt_ids; // when non-empty: the prompt as token ids (`prompt` is ignored), e.g.
                                   // a conversation rendered by a chat template and tokenized by the caller
  int max_tokens = 64;  // >= 1
  float temperature = 0;  // 0 = greedy
  int top_k = 0;          // 0 = off
  float top_p = 1;        // 1 = off
  uint64_t seed = 0;
  std::vector<std::string> stop;
  // Ids that end the generation (finish_reason kEos, not part of the text) besides the tokenizer's
  // eos_ids(): e.g. a chat format's end-of-turn token.
  std::vector<int32_t> end_ids;
  bool return_routing = false;
  // Report each generated token's log-probability (logprobs.h) and its `top_logprobs` (>= 0) most
  // likely alternatives: in GenerateResult::logprobs and, streaming, through on_logprobs.
  bool logprobs = false;
  int top_logprobs = 0;
  // Streaming with logprobs: called on the caller's thread, just before the on_delta that carries the
  // text released with these tokens (every token sampled since the previous call; tokens whose text is
  // still held back by the stop matcher come with a later delta). The last tokens may come after the
  // last delta, with no delta of their own (their text was cut by a stop string).
  std::function<void(std::vector<TokenLogprob>)> on_logprobs;
  // Cancellation and deadline (the caller's client went away / its RPC deadline): while the request
  // waits or decodes, `cancelled` is polled every few milliseconds (kCancelPollInterval) and `deadline`
  // watched; either ends it -- it leaves the queue or the batch before the next step, its KV cache goes
  // back to the pool -- and Generate returns CANCELLED / DEADLINE_EXCEEDED.
  std::function<bool()> cancelled;
  absl::Time deadline = absl::InfiniteFuture();
};

// How often a waiting Generate polls GenerateParams::cancelled.
inline constexpr absl::Duration kCancelPollInterval = absl::Milliseconds(10);

enum class FinishReason { kLength, kStop, kEos };
const char* FinishReasonName(FinishReason r);  // "length", "stop", "eos"

struct GenerateResult {
  std::string text;
  FinishReason finish_reason = FinishReason::kLength;
  int64_t version = 0;      // the version that served it (0 = base)
  std::string sha256;       // its content digest ("" for base)
  int prompt_tokens = 0;    // including BOS
  int completion_tokens = 0;
  int cached_tokens = 0;    // prompt tokens restored from the prefix cache instead of prefilled
  std::vector<int32_t> tokens;        // generated ids (no EOS)
  std::vector<TokenLogprob> logprobs; // with GenerateParams::logprobs: one per id of `tokens`
  std::vector<LayerRouting> routing;  // with return_routing
};

struct ScoreResult {
  double total_logprob = 0;  // sum of log p(byte_i | BOS, bytes < i)
  int64_t num_tokens = 0;    // scored tokens (the text's tokens; BOS is context only)
  double perplexity = 0;     // exp(-total_logprob / num_tokens)
  int64_t version = 0;
  std::string sha256;
  std::vector<LayerRouting> routing;  // over BOS + the text's tokens
};

struct RuntimeStatus {
  std::vector<ResidentOverlay> resident;  // device tier, most recently used first
  int64_t resident_bytes = 0;  // device tier (= overlay_device_bytes)
  int64_t held_bytes = 0;  // evicted overlays still held by requests
  int64_t resident_bytes_limit = 0;
  // The overlay tiers (overlay_cache.h; OverlayCacheStats has the definitions).
  std::vector<ResidentOverlay> host_resident;  // host tier, most recently used first
  int64_t overlay_host_bytes = 0;
  int64_t overlay_host_bytes_limit = 0;
  int64_t overlay_device_hits = 0;
  int64_t overlay_device_misses = 0;
  int64_t overlay_host_hits = 0;
  int64_t overlay_host_misses = 0;
  int64_t overlay_promotions = 0;
  int64_t overlay_demotions = 0;
  int64_t overlay_host_evictions = 0;
  int64_t overlay_not_admitted = 0;
  int64_t overlay_loads_in_flight = 0;
  int64_t requests_waiting_for_overlay = 0;  // not yet in the queue: their overlay is being loaded
  std::map<std::string, int64_t> live;  // tenant -> version served by default
  int64_t pending_requests = 0;  // queued with their overlay ready, waiting for a batch slot
  std::map<std::string, int64_t> pending_by_tenant;  // the same by tenant (tenants with none absent)
  int64_t kv_caches_free = 0;    // pooled KV caches not held by a request (= max_batch when idle)
  int64_t kv_blocks_total = 0;   // paged KV pool (kv_cache_pool.h): kv_blocks + the prefix cache's blocks
  int64_t kv_blocks_free = 0;    // held by nobody (blocks only the prefix cache holds are not free)
  int64_t kv_block_tokens = 0;
  int64_t kv_preemptions = 0;    // since start: requests that gave their blocks back to wait and recompute
  int64_t preempted_requests = 0;  // now waiting to be readmitted after a preemption
  int64_t active_requests = 0;   // in the running batch
  int64_t tokens_generated = 0;  // since start
  int64_t steps = 0;             // forward steps run
  int64_t batched_sequences = 0; // sum over steps of the sequences in the step (/ steps = mean batch)
  int64_t max_batch_seen = 0;    // largest step so far
  int64_t overlay_loads = 0;
  int64_t overlay_evictions = 0;
  int64_t kv_cache_bytes = 0;
  int64_t overlay_pool_slabs = 0;           // preallocated overlay slabs (0: no pool)
  int64_t overlay_pool_slabs_in_use = 0;
  int64_t overlay_pool_overflow_slots = 0;  // slots loaded outside the pool because it was full
  bool prefix_cache_enabled = false;
  PrefixCacheStats prefix_cache;            // zeros when off
};

struct Request;  // scheduler state of one Generate (request.h)

class Runtime {
 public:
  // `model`, `tokenizer` and `source` are not owned and must outlive the runtime. Allocates the KV
  // cache pool and starts the scheduler thread. INVALID_ARGUMENT naming the option for a bad option
  // (or a tokenizer whose vocabulary exceeds the model's).
  static absl::StatusOr<std::unique_ptr<Runtime>> Create(const Model* model, const Tokenizer* tokenizer,
                                                         VersionSource* source, RuntimeOptions options);
  ~Runtime();  // Shutdown()
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  using DeltaCallback = std::function<bool(std::string_view delta)>;
  // `version`: nullopt = the tenant's live version (see file comment); 0 = base; N = pinned.
  // Errors: INVALID_ARGUMENT (tenant empty, bad params, prompt longer than kv_capacity - with the prompt's
  // tokens, the capacity and kv_capacity_hint), NOT_FOUND (unknown tenant or version, from the source), UNAVAILABLE (queue full or
  // shutting down), RESOURCE_EXHAUSTED (the tenant's max_queue_per_tenant requests already wait), CANCELLED
  // (on_delta returned false or params.cancelled said so), DEADLINE_EXCEEDED (params.deadline passed).
  absl::StatusOr<GenerateResult> Generate(const std::string& tenant, std::optional<int64_t> version,
                                          const GenerateParams& params, const DeltaCallback& on_delta = nullptr);

  // Log-likelihood of BOS + text under the tenant's version, outside the batch (Model::ScoreTokens).
  // INVALID_ARGUMENT for empty text or more than kv_capacity tokens (the numbers and kv_capacity_hint).
  absl::StatusOr<ScoreResult> Score(const std::string& tenant, std::optional<int64_t> version,
                                    std::string_view text, bool return_routing);
  // The same over token ids (>= 2; the first is context only), e.g. a rendered conversation.
  absl::StatusOr<ScoreResult> ScoreIds(const std::string& tenant, std::optional<int64_t> version,
                                       std::vector<int32_t> tokens, bool return_routing);

  // Makes `version` (0 = base) the tenant's live version: loads it into the overlay cache (fresh
  // buffers, on this thread; decoding continues meanwhile), then publishes a new table. When it returns
  // OK, every request that starts afterwards is served by `version`; requests already started finish
  // on theirs. On error (NOT_FOUND, parse error) nothing changes.
  absl::Status SetLive(const std::string& tenant, int64_t version);

  // The version a request for `tenant` without a pin would be served by now (resolving a tenant not
  // seen yet through the source, like Generate).
  absl::StatusOr<int64_t> LiveVersion(const std::string& tenant);

  // Drops everything known about the tenant (live entry, resident versions): for tenant deletion, so
  // a re-created tenant's versions are loaded afresh. Requests in flight finish normally.
  void ForgetTenant(const std::string& tenant);

  RuntimeStatus Status();

  // Pause: the scheduler finishes its current step and then runs nothing (requests queue up, active
  // ones wait) until Resume().
  void Pause();
  void Resume();

  // Stops accepting requests, fails the queued and running ones with UNAVAILABLE, joins the scheduler.
  // Idempotent.
  void Shutdown();

  const RuntimeOptions& options() const { return options_; }
  const Model& model() const { return *model_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }

 private:
  struct Resolved {
    int64_t version = 0;
    std::string sha256;
    std::shared_ptr<const ExpertOverlay> overlay;  // null for version 0
    std::shared_ptr<const ExpertTable::Snapshot> table;
  };

  Runtime(const Model* model, const Tokenizer* tokenizer, VersionSource* source, RuntimeOptions options);
  // `load`: acquire the overlay here (blocking); false: only if it is on the device tier (Generate:
  // a missing overlay is prefetched by a loader thread).
  absl::StatusOr<Resolved> Resolve(const std::string& tenant, std::optional<int64_t> version, bool load = true);
  // load: the version's overlay, loading or promoting it on this thread; !load: only if already on the
  // device tier (nullptr otherwise).
  absl::StatusOr<std::shared_ptr<const ExpertOverlay>> OverlayFor(const std::string& tenant, int64_t version,
                                                                  bool load);
  // With mu_ held: a request joins the admission queue (cost: prompt + max_tokens); `n` requests join
  // (n > 0) or leave (n < 0) the tenant's wait for an overlay load.
  void EnqueueLocked(const std::shared_ptr<Request>& r);
  void AddAwaitingLocked(const std::string& tenant, int64_t n);
  std::vector<int32_t> PromptTokens(std::string_view text) const;
  // The INVALID_ARGUMENT message for a prompt/text of `tokens` tokens that exceeds kv_capacity.
  std::string TooLong(const char* what, size_t tokens) const;

  // Marks a request the caller gave up on: removed from the queue at once if still there (finished
  // here), else dropped from the batch by the scheduler before its next step.
  void Abandon(const std::shared_ptr<Request>& r);

  // A loader thread: takes (tenant, version) keys off load_queue_, acquires the overlay (promotion or
  // disk load, without the runtime's locks) and moves the requests waiting for it into the queue.
  void LoaderLoop();

  // scheduler.cc
  void SchedulerLoop();
  void Step(std::vector<std::shared_ptr<Request>>& active);
  void Complete(Request& r, FinishReason reason);  // result + final delta, then Finish(OK)
  void EmitDelta(Request& r, bool final);
  void Finish(Request& r, absl::Status status);
  // Prefix cache (scheduler.cc): copy cached blocks of joining prompts into their KV caches; store the
  // whole blocks of a request's cache. Both take the device mutex.
  void RestorePrefixes(std::vector<std::shared_ptr<Request>>& active);
  void StorePrefix(Request& r);
  // Paged KV (scheduler.cc): blocks `r` needs beyond those it holds for its next step; admission's test;
  // preemption of `r` (its blocks go back to the pool, it waits in preempted_ to recompute).
  int64_t BlocksNeededForNextStep(const Request& r) const;
  bool AdmitByBlocks(const Request& r, const std::vector<std::shared_ptr<Request>>& active) const;
  void Preempt(const std::shared_ptr<Request>& r);

  const Model* model_;
  const Tokenizer* tokenizer_;
  VersionSource* source_;
  const RuntimeOptions options_;

  std::mutex set_live_mu_;  // orders SetLive calls (each publishes what it loaded)
  std::mutex publish_mu_;   // keeps table publication and the cache's live marks in the same order
  std::mutex own_device_mu_;
  std::mutex* device_mu_;   // options_.device_mutex or own_device_mu_ (see file comment)
  ExpertTable table_;
  OverlayCache cache_;
  std::unique_ptr<KvCachePool> kv_pool_;
  std::unique_ptr<PrefixCache> prefix_cache_;  // null when options_.prefix_cache_bytes == 0

  std::mutex mu_;  // guards queue_, stopping_ and the overlay-wait state below
  std::condition_variable cv_;
  FairQueue<std::shared_ptr<Request>> queue_;  // waiting for a batch slot (options_.admission)
  // Preempted requests waiting to be readmitted, oldest admission first; they go before queue_.
  std::deque<std::shared_ptr<Request>> preempted_;
  int64_t next_admission_ = 0;  // scheduler only: Request::admission of the next first admission
  // Requests waiting for their overlay, by (tenant, version); keys with a load to start, in order.
  std::map<std::pair<std::string, int64_t>, std::vector<std::shared_ptr<Request>>> awaiting_overlay_;
  std::deque<std::pair<std::string, int64_t>> load_queue_;
  std::map<std::string, int64_t> awaiting_by_tenant_;
  int64_t awaiting_count_ = 0;
  std::condition_variable load_cv_;
  std::vector<std::thread> loaders_;
  bool stopping_ = false;
  bool paused_ = false;
  std::thread scheduler_;

  std::atomic<int64_t> active_count_{0};
  std::atomic<int64_t> tokens_generated_{0};
  std::atomic<int64_t> steps_{0};
  std::atomic<int64_t> batched_sequences_{0};
  std::atomic<int64_t> max_batch_seen_{0};
  std::atomic<int64_t> preemptions_{0};
};

}  // namespace tessera::runtime
