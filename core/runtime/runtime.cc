// Runtime: creation, version resolution, SetLive, Generate's caller side, Score, Status, Shutdown
// (see runtime.h). The scheduler thread is in scheduler.cc.
#include "core/runtime/runtime.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>

#include "absl/algorithm/container.h"
#include "absl/strings/str_cat.h"
#include "core/runtime/request.h"
#include "core/sampling/sampler.h"
#include "core/util/status_macros.h"

namespace tessera::runtime {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop";
    case FinishReason::kEos: return "eos";
  }
  return "?";
}

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Create(const Model* model, const Tokenizer* tokenizer,
                                                         VersionSource* source, RuntimeOptions options) {
  if (model == nullptr) return absl::InvalidArgumentError("Runtime: model is null");
  if (tokenizer == nullptr) return absl::InvalidArgumentError("Runtime: tokenizer is null");
  if (source == nullptr) return absl::InvalidArgumentError("Runtime: version source is null");
  const ModelConfig& c = model->config();
  if (tokenizer->vocab_size() > c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("Runtime: the tokenizer's vocabulary (", tokenizer->vocab_size(),
                                                   ") is larger than the model's (", c.vocab_size, ")"));
  }
  if (options.max_batch < 1) {
    return absl::InvalidArgumentError(absl::StrCat("Runtime: max_batch must be >= 1, got ", options.max_batch));
  }
  if (options.kv_capacity < 2 || options.kv_capacity > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("Runtime: kv_capacity must be in [2, ", c.max_position_embeddings,
                                                   "] (the model's context), got ", options.kv_capacity));
  }
  if (options.kv_block_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("Runtime: kv_block_tokens must be >= 1, got ", options.kv_block_tokens));
  }
  const int64_t context_blocks = KvBlockPool::BlocksFor(options.kv_capacity, options.kv_block_tokens);
  if (options.kv_blocks == 0) options.kv_blocks = options.max_batch * context_blocks;
  if (options.kv_blocks < context_blocks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Runtime: kv_blocks must hold one full context (", context_blocks, " blocks of ", options.kv_block_tokens,
        " positions for kv_capacity ", options.kv_capacity, "), got ", options.kv_blocks));
  }
  if (options.max_queue < 1) {
    return absl::InvalidArgumentError(absl::StrCat("Runtime: max_queue must be >= 1, got ", options.max_queue));
  }
  if (options.max_queue_per_tenant < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("Runtime: max_queue_per_tenant must be >= 1, got ", options.max_queue_per_tenant));
  }
  if (options.admission_quantum < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("Runtime: admission_quantum must be >= 1, got ", options.admission_quantum));
  }
  for (const auto& [tenant, weight] : options.tenant_weights) {
    if (weight < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("Runtime: tenant_weights[", tenant, "] must be >= 1, got ", weight));
    }
  }
  if (options.overlay_cache_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Runtime: overlay_cache_bytes must be >= 0, got ", options.overlay_cache_bytes));
  }
  if (options.overlay_host_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--overlay-host-bytes must be >= 0 (0 = no host tier), got ", options.overlay_host_bytes));
  }
  if (options.overlay_loader_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("Runtime: overlay_loader_threads must be >= 1, got ", options.overlay_loader_threads));
  }
  if (options.max_prefill_tokens_per_step < 1) {
    return absl::InvalidArgumentError(absl::StrCat("Runtime: max_prefill_tokens_per_step must be >= 1, got ",
                                                   options.max_prefill_tokens_per_step));
  }
  std::unique_ptr<Runtime> rt(new Runtime(model, tokenizer, source, options));
  rt->paused_ = options.start_paused;
  if (options.max_step_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-step-tokens must be >= 0 (0 = off), got ", options.max_step_tokens));
  }
  if (options.prefix_cache_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--prefix-cache-bytes must be >= 0 (0 = off), got ", options.prefix_cache_bytes));
  }
  {
    std::lock_guard<std::mutex> lock(*rt->device_mu_);
    // The prefix cache keeps its blocks in the KV pool (shared with the sequences that read them), so
    // the pool grows by the cache's budget: KV memory + prefix cache bytes, as the two flags say.
    const DType kv_dtype = model->weights().matrix_dtype();
    const int64_t block_bytes = options.kv_block_tokens * KvCache::BytesPerPosition(c, kv_dtype);
    const int64_t prefix_blocks = options.prefix_cache_bytes / block_bytes;
    ASSIGN_OR_RETURN(rt->kv_pool_, KvCachePool::Create(c, options.max_batch, options.kv_capacity,
                                                       options.kv_blocks + prefix_blocks, options.kv_block_tokens,
                                                       model->backend(), kv_dtype));
    if (options.prefix_cache_bytes > 0) {
      ASSIGN_OR_RETURN(rt->prefix_cache_,
                       PrefixCache::Create(rt->kv_pool_->block_pool(), {options.prefix_cache_bytes}));
    }
    if (options.overlay_slab_pool) {
      const DType dtype = model->weights().matrix_dtype();
      const int64_t slab = OverlaySlabPool::SlotBytes(c, dtype);
      const int64_t slabs = (options.overlay_cache_bytes + slab - 1) / slab + options.max_batch;
      ASSIGN_OR_RETURN(std::unique_ptr<OverlaySlabPool> pool, OverlaySlabPool::Create(c, dtype, slabs, model->backend()));
      rt->cache_.UseSlabPool(std::move(pool));
    }
  }
  rt->scheduler_ = std::thread([r = rt.get()] { r->SchedulerLoop(); });
  for (int i = 0; i < options.overlay_loader_threads; ++i) {
    rt->loaders_.emplace_back([r = rt.get()] { r->LoaderLoop(); });
  }
  return rt;
}

Runtime::Runtime(const Model* model, const Tokenizer* tokenizer, VersionSource* source, RuntimeOptions options)
    : model_(model),
      tokenizer_(tokenizer),
      source_(source),
      options_(options),
      device_mu_(options.device_mutex != nullptr ? options.device_mutex : &own_device_mu_),
      cache_(model->config(), model->backend(), source, options.overlay_cache_bytes, device_mu_,
             model->weights().matrix_dtype(), &model->weights(), options.overlay_host_bytes),
      queue_(FairQueueOptions{options.admission, options.admission_quantum, options.tenant_weights, 1}) {}

Runtime::~Runtime() { Shutdown(); }

void Runtime::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  load_cv_.notify_all();
  if (scheduler_.joinable()) scheduler_.join();
  // A loader finishing a load now fails its waiters (stopping_); one blocked in its VersionSource is
  // waited for.
  for (std::thread& t : loaders_) {
    if (t.joinable()) t.join();
  }
  // The scheduler failed its active requests on the way out; nothing is admitted any more.
  std::vector<std::shared_ptr<Request>> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.RemoveIf([](const std::shared_ptr<Request>&) { return true; }, &left);
    for (auto& [key, waiters] : awaiting_overlay_) left.insert(left.end(), waiters.begin(), waiters.end());
    left.insert(left.end(), preempted_.begin(), preempted_.end());
    preempted_.clear();
    awaiting_overlay_.clear();
    load_queue_.clear();
    awaiting_by_tenant_.clear();
    awaiting_count_ = 0;
  }
  for (auto& r : left) Finish(*r, absl::UnavailableError("the runtime is shutting down"));
}

void Runtime::Pause() {
  std::lock_guard<std::mutex> lock(mu_);
  paused_ = true;
}

void Runtime::Resume() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    paused_ = false;
  }
  cv_.notify_all();
}

absl::StatusOr<std::shared_ptr<const ExpertOverlay>> Runtime::OverlayFor(const std::string& tenant,
                                                                        int64_t version, bool load) {
  if (load) return cache_.Acquire(tenant, version);
  return cache_.TryAcquireResident(tenant, version);
}

void Runtime::EnqueueLocked(const std::shared_ptr<Request>& r) {
  queue_.Push(r->tenant, static_cast<int64_t>(r->prompt.size()) + r->max_tokens, r);
}

void Runtime::AddAwaitingLocked(const std::string& tenant, int64_t n) {
  awaiting_count_ += n;
  auto it = awaiting_by_tenant_.try_emplace(tenant, 0).first;
  it->second += n;
  if (it->second <= 0) awaiting_by_tenant_.erase(it);
}

namespace {

// Loader threads run at a lower CPU priority (nice +10 over the process's): a load is background work for
// one cold request, while the scheduler's step serves every running one. On the CPU backend loads run
// beside the steps (OverlayCache::DeviceLock), so on a saturated machine they now yield to the steps
// (bench_serve --many-tenants 1,64,1000, 6 interleaved pairs: ratio_1000 mean 0.832 -> 0.850, hot-tenant
// p99 ratio mean 1.26 -> 1.15; ops/bench/RESULTS.md). Best effort: an error leaves the priority as it was.
void LowerLoaderPriority() {
  errno = 0;
  const int current = getpriority(PRIO_PROCESS, 0);
  if (errno == 0) (void)setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), std::min(current + 10, 19));
}

}  // namespace

void Runtime::LoaderLoop() {
  LowerLoaderPriority();
  for (;;) {
    std::pair<std::string, int64_t> key;
    {
      std::unique_lock<std::mutex> lock(mu_);
      load_cv_.wait(lock, [&] { return stopping_ || !load_queue_.empty(); });
      if (stopping_) return;
      key = std::move(load_queue_.front());
      load_queue_.pop_front();
    }
    // Promotion or disk load (or a device hit, if another path brought it in meanwhile); the cache
    // takes the device mutex only for its uploads.
    absl::StatusOr<std::shared_ptr<const ExpertOverlay>> overlay = cache_.Acquire(key.first, key.second);
    std::vector<std::shared_ptr<Request>> waiters;
    absl::Status failed;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (auto it = awaiting_overlay_.find(key); it != awaiting_overlay_.end()) {
        waiters = std::move(it->second);
        awaiting_overlay_.erase(it);
      }
      if (!waiters.empty()) AddAwaitingLocked(key.first, -static_cast<int64_t>(waiters.size()));
      if (stopping_) {
        failed = absl::UnavailableError("the runtime is shutting down");
      } else if (!overlay.ok()) {
        failed = overlay.status();
      } else {
        // Waiters move to the queue inside this critical section, so an Abandon (which takes mu_) finds
        // each of them in one place or the other.
        for (auto& r : waiters) {
          r->overlay = *overlay;
          r->sha256 = (*overlay)->digest();
          EnqueueLocked(r);
        }
      }
    }
    if (!failed.ok()) {
      for (auto& r : waiters) Finish(*r, failed);
    } else if (!waiters.empty()) {
      cv_.notify_all();
    }
  }
}

absl::StatusOr<Runtime::Resolved> Runtime::Resolve(const std::string& tenant, std::optional<int64_t> version,
                                                   bool load) {
  if (tenant.empty()) return absl::InvalidArgumentError("tenant_id is empty");
  Resolved r;
  r.table = table_.Current();
  if (version.has_value()) {
    if (*version < 0) return absl::InvalidArgumentError(absl::StrCat("version must be >= 0, got ", *version));
    r.version = *version;
  } else if (auto it = r.table->find(tenant); it != r.table->end()) {
    r.version = it->second.version;
  } else {
    // First request for a tenant the runtime has not been told about: follow the registry's pointer.
    ASSIGN_OR_RETURN(const int64_t live, source_->LiveVersion(tenant));
    if (live < 0) return absl::InternalError(absl::StrCat("version source: live version ", live, " is negative"));
    std::shared_ptr<const ExpertOverlay> overlay;
    if (live > 0) { ASSIGN_OR_RETURN(overlay, OverlayFor(tenant, live, load)); }
    const std::string sha = overlay ? overlay->digest() : "";
    LiveEntry now;
    {
      std::lock_guard<std::mutex> lock(publish_mu_);
      now = table_.SetIfAbsent(tenant, LiveEntry{live, sha});
      if (now.version == live) cache_.MarkLive(tenant, live);
    }
    r.table = table_.Current();
    r.version = now.version;
    if (now.version == live) {
      r.overlay = std::move(overlay);
      r.sha256 = sha;
      return r;
    }
  }
  if (r.version > 0) { ASSIGN_OR_RETURN(r.overlay, OverlayFor(tenant, r.version, load)); }
  if (r.overlay != nullptr) r.sha256 = r.overlay->digest();
  return r;
}

absl::Status Runtime::SetLive(const std::string& tenant, int64_t version) {
  if (tenant.empty()) return absl::InvalidArgumentError("SetLive: tenant_id is empty");
  if (version < 0) return absl::InvalidArgumentError(absl::StrCat("SetLive: version must be >= 0, got ", version));
  std::lock_guard<std::mutex> order(set_live_mu_);
  // Load first (fresh buffers, this thread), publish second: the swap itself is one pointer store.
  std::shared_ptr<const ExpertOverlay> overlay;
  if (version > 0) { ASSIGN_OR_RETURN(overlay, OverlayFor(tenant, version, /*load=*/true)); }
  std::lock_guard<std::mutex> lock(publish_mu_);
  table_.Set(tenant, LiveEntry{version, overlay ? overlay->digest() : ""});
  cache_.MarkLive(tenant, version);
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Runtime::LiveVersion(const std::string& tenant) {
  ASSIGN_OR_RETURN(Resolved r, Resolve(tenant, std::nullopt));
  return r.version;
}

void Runtime::ForgetTenant(const std::string& tenant) {
  std::lock_guard<std::mutex> order(set_live_mu_);
  std::lock_guard<std::mutex> lock(publish_mu_);
  table_.Erase(tenant);
  cache_.ForgetTenant(tenant);
}

std::vector<int32_t> Runtime::PromptTokens(std::string_view text) const {
  std::vector<int32_t> ids = tokenizer_->Encode(text);
  ids.insert(ids.begin(), tokenizer_->bos_id());
  return ids;
}

std::string Runtime::TooLong(const char* what, size_t tokens) const {
  std::string out = absl::StrCat(what, " is ", tokens, " tokens (with BOS) but the context holds ",
                                 options_.kv_capacity, " positions per request (prompt + completion)");
  if (!options_.kv_capacity_hint.empty()) absl::StrAppend(&out, ": ", options_.kv_capacity_hint);
  return out;
}

absl::StatusOr<GenerateResult> Runtime::Generate(const std::string& tenant, std::optional<int64_t> version,
                                                 const GenerateParams& params, const DeltaCallback& on_delta) {
  if (params.max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens must be >= 1, got ", params.max_tokens));
  }
  if (params.top_logprobs < 0) {
    return absl::InvalidArgumentError(absl::StrCat("top_logprobs must be >= 0, got ", params.top_logprobs));
  }
  SamplingParams sampling;
  sampling.temperature = params.temperature;
  sampling.top_k = params.top_k;
  sampling.top_p = params.top_p;
  sampling.seed = params.seed;
  RETURN_IF_ERROR(Sampler::Validate(sampling));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("the runtime is shutting down");
  }
  if (absl::Now() >= params.deadline) return absl::DeadlineExceededError("the deadline passed before generation started");
  ASSIGN_OR_RETURN(Resolved res, Resolve(tenant, version, /*load=*/false));
  std::vector<int32_t> prompt = params.prompt_ids.empty() ? PromptTokens(params.prompt) : params.prompt_ids;
  if (prompt.empty()) return absl::InvalidArgumentError("prompt is empty: it encodes to no tokens");
  if (static_cast<int64_t>(prompt.size()) > options_.kv_capacity) {
    return absl::InvalidArgumentError(TooLong("prompt", prompt.size()));
  }
  auto r = std::make_shared<Request>(sampling, params.stop, *tokenizer_);
  r->tenant = tenant;
  r->version = res.version;
  r->sha256 = res.sha256;
  r->table = std::move(res.table);
  r->overlay = std::move(res.overlay);
  r->prompt = std::move(prompt);
  r->input = r->prompt;
  r->max_tokens = params.max_tokens;
  r->end_ids = tokenizer_->eos_ids();
  r->end_ids.insert(r->end_ids.end(), params.end_ids.begin(), params.end_ids.end());
  r->collect_routing = params.return_routing || options_.always_collect_routing;
  r->streaming = static_cast<bool>(on_delta);
  r->want_logprobs = params.logprobs;
  r->top_logprobs = params.top_logprobs;
  if (r->collect_routing) r->routing.Init(model_->config().num_layers, model_->config().num_experts);
  // Not on the device tier: wait aside while a loader prefetches it (see the file comment).
  const bool await_overlay = r->version > 0 && r->overlay == nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("the runtime is shutting down");
    const int64_t waiting = static_cast<int64_t>(queue_.size()) + awaiting_count_;
    if (waiting >= options_.max_queue) {
      return absl::UnavailableError(absl::StrCat("the server is overloaded: ", waiting,
                                                 " requests are waiting; retry later"));
    }
    auto aw = awaiting_by_tenant_.find(tenant);
    const int64_t tenant_waiting =
        static_cast<int64_t>(queue_.size(tenant)) + (aw != awaiting_by_tenant_.end() ? aw->second : 0);
    if (tenant_waiting >= options_.max_queue_per_tenant) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "tenant '", tenant, "' already has ", tenant_waiting, " generation requests waiting for a batch slot (",
          "the per-tenant limit, --max-queued-per-tenant); retry when some have finished"));
    }
    if (await_overlay) {
      auto [it, first] = awaiting_overlay_.try_emplace({tenant, r->version});
      it->second.push_back(r);
      if (first) load_queue_.emplace_back(tenant, r->version);
      AddAwaitingLocked(tenant, 1);
    } else {
      EnqueueLocked(r);
    }
  }
  if (await_overlay) {
    load_cv_.notify_one();
  } else {
    cv_.notify_all();
  }

  const bool watch = static_cast<bool>(params.cancelled) || params.deadline != absl::InfiniteFuture();
  for (;;) {
    std::string delta;
    std::vector<TokenLogprob> logprobs;
    bool done = false;
    {
      std::unique_lock<std::mutex> lock(r->mu);
      auto ready = [&] { return r->done || !r->pending_delta.empty() || !r->pending_logprobs.empty(); };
      if (!watch) {
        r->cv.wait(lock, ready);
      } else {
        const absl::Time wake = std::min(absl::Now() + kCancelPollInterval, params.deadline);
        r->cv.wait_until(lock, absl::ToChronoTime(wake), ready);
      }
      delta.swap(r->pending_delta);
      logprobs.swap(r->pending_logprobs);
      done = r->done;
    }
    if (!logprobs.empty() && params.on_logprobs) params.on_logprobs(std::move(logprobs));
    if (!delta.empty() && on_delta && !on_delta(delta)) {
      Abandon(r);
      return absl::CancelledError("generation cancelled by the caller");
    }
    if (done) break;
    if (watch) {
      if (params.cancelled && params.cancelled()) {
        Abandon(r);
        return absl::CancelledError("generation cancelled by the caller");
      }
      if (absl::Now() >= params.deadline) {
        Abandon(r);
        return absl::DeadlineExceededError("the deadline passed before the generation finished");
      }
    }
  }
  if (!r->status.ok()) return r->status;
  return std::move(r->result);
}

void Runtime::Abandon(const std::shared_ptr<Request>& r) {
  r->cancelled.store(true);
  std::vector<std::shared_ptr<Request>> removed;
  {
    // Still waiting: leave the queue now (its place counts against the limits); in the batch: the
    // scheduler drops it before its next step.
    std::lock_guard<std::mutex> lock(mu_);
    queue_.RemoveIf([&](const std::shared_ptr<Request>& q) { return q == r; }, &removed);
    if (auto p = absl::c_find(preempted_, r); p != preempted_.end()) {
      preempted_.erase(p);
      removed.push_back(r);
    }
    if (auto it = awaiting_overlay_.find({r->tenant, r->version}); it != awaiting_overlay_.end()) {
      // Waiting for its overlay: leave the wait (the load itself goes on; its entry may stay empty).
      if (auto w = absl::c_find(it->second, r); w != it->second.end()) {
        it->second.erase(w);
        removed.push_back(r);
        AddAwaitingLocked(r->tenant, -1);
      }
    }
  }
  for (auto& q : removed) Finish(*q, absl::CancelledError("generation cancelled by the caller"));
  cv_.notify_all();
}

absl::StatusOr<ScoreResult> Runtime::Score(const std::string& tenant, std::optional<int64_t> version,
                                           std::string_view text, bool return_routing) {
  if (text.empty()) return absl::InvalidArgumentError("text is empty: nothing to score");
  return ScoreIds(tenant, version, PromptTokens(text), return_routing);
}

absl::StatusOr<ScoreResult> Runtime::ScoreIds(const std::string& tenant, std::optional<int64_t> version,
                                              std::vector<int32_t> tokens, bool return_routing) {
  if (tokens.size() < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the text encodes to ", tokens.size(), " token(s): scoring needs at least 2 (the first is context only)"));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("the runtime is shutting down");
  }
  ASSIGN_OR_RETURN(Resolved res, Resolve(tenant, version));
  if (static_cast<int64_t>(tokens.size()) > options_.kv_capacity) {
    return absl::InvalidArgumentError(TooLong("text", tokens.size()));
  }
  const bool want_routing = return_routing || options_.always_collect_routing;
  SequenceInput in{tokens, res.overlay.get(), nullptr};
  std::vector<RoutingStats> routing;
  absl::StatusOr<std::vector<std::vector<float>>> lp;
  {
    std::lock_guard<std::mutex> lock(*device_mu_);
    lp = model_->ScoreTokens(absl::MakeConstSpan(&in, 1), want_routing ? &routing : nullptr);
  }
  if (!lp.ok()) return lp.status();
  ScoreResult out;
  for (float x : (*lp)[0]) out.total_logprob += static_cast<double>(x);
  out.num_tokens = static_cast<int64_t>((*lp)[0].size());
  out.perplexity = std::exp(-out.total_logprob / static_cast<double>(out.num_tokens));
  out.version = res.version;
  out.sha256 = res.sha256;
  if (want_routing && !routing.empty()) out.routing = SummarizeRouting(routing[0]);
  return out;
}

RuntimeStatus Runtime::Status() {
  RuntimeStatus s;
  OverlayCacheStats cs = cache_.Stats();
  s.resident = std::move(cs.resident);
  s.resident_bytes = cs.resident_bytes;
  s.held_bytes = cs.held_bytes;
  s.resident_bytes_limit = cs.capacity_bytes;
  s.overlay_loads = cs.loads;
  s.overlay_evictions = cs.evictions;
  s.overlay_pool_slabs = cs.pool_slabs;
  s.overlay_pool_slabs_in_use = cs.pool_slabs_in_use;
  s.overlay_pool_overflow_slots = cs.pool_overflow_slots;
  s.host_resident = std::move(cs.host);
  s.overlay_host_bytes = cs.host_bytes;
  s.overlay_host_bytes_limit = cs.host_capacity_bytes;
  s.overlay_device_hits = cs.hits;
  s.overlay_device_misses = cs.misses;
  s.overlay_host_hits = cs.host_hits;
  s.overlay_host_misses = cs.host_misses;
  s.overlay_promotions = cs.promotions;
  s.overlay_demotions = cs.demotions;
  s.overlay_host_evictions = cs.host_evictions;
  s.overlay_not_admitted = cs.not_admitted;
  s.overlay_loads_in_flight = cs.loads_in_flight;
  // Held in a named variable: a range-for over `*table_.Current()` would drop the temporary shared_ptr
  // before the loop runs, and a concurrent SetLive could free the snapshot being read (ThreadSanitizer
  // found it with overlay_tiers_test's status poller).
  const std::shared_ptr<const ExpertTable::Snapshot> table = table_.Current();
  for (const auto& [tenant, entry] : *table) s.live[tenant] = entry.version;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s.pending_requests = static_cast<int64_t>(queue_.size());
    s.pending_by_tenant = queue_.Depths();
    s.requests_waiting_for_overlay = awaiting_count_;
    s.preempted_requests = static_cast<int64_t>(preempted_.size());
  }
  s.kv_caches_free = kv_pool_ ? kv_pool_->available() : 0;
  if (kv_pool_) {
    s.kv_blocks_total = kv_pool_->total_blocks();
    s.kv_blocks_free = kv_pool_->free_blocks();
    s.kv_block_tokens = kv_pool_->block_tokens();
  }
  s.kv_preemptions = preemptions_.load();
  s.active_requests = active_count_.load();
  s.tokens_generated = tokens_generated_.load();
  s.steps = steps_.load();
  s.batched_sequences = batched_sequences_.load();
  s.max_batch_seen = max_batch_seen_.load();
  s.kv_cache_bytes = kv_pool_ ? kv_pool_->bytes() : 0;
  if (prefix_cache_) {
    s.prefix_cache_enabled = true;
    s.prefix_cache = prefix_cache_->Stats();
  }
  return s;
}

}  // namespace tessera::runtime
