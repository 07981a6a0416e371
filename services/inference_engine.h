// InferenceEngine: what the Inference and Admin services need from the model runtime. The server owns
// one; the real implementation wraps core/runtime (backbone on the device, expert table of resident
// tenant versions, continuous batching). Services never touch tensors.
//
// Version semantics: `version` nullopt = the tenant's live version as the engine serves it (the last
// ServeLive, or the registry's live pointer for a tenant not seen before); 0 = the base experts; N = the
// tenant's version N (NOT_FOUND if the tenant has no such version). Every result names the version
// that actually served it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/backbone_info.h"

namespace tessera::services {

// One turn of a conversation (rendered by the backbone's chat template).
struct ChatMessage {
  std::string role;
  std::string content;
};

// What a request feeds the model: raw text (the tokenizer's default special tokens are added) or a
// conversation (rendered with the backbone's chat template). Exactly one is set.
struct TextInput {
  std::string text;
  std::vector<ChatMessage> messages;
  bool is_chat() const { return !messages.empty(); }
};

// A generated token's log-probability (core/runtime/logprobs.h: log-softmax of the raw logits, before
// temperature and top-p) and its most likely alternatives.
struct TokenLogprob {
  int32_t id = 0;
  std::string bytes;  // what the token adds to the output (raw; may hold part of a UTF-8 character)
  std::string token;  // `bytes` when valid UTF-8, else "bytes:\xNN..." (OpenAI's form): safe for JSON/proto
  float logprob = 0;
  std::vector<TokenLogprob> top;  // most likely first; their own `top` is empty
};

struct GenerateParams {
  TextInput input;  // messages: rendered with add_generation_prompt; stops at the end-of-turn token
  int max_tokens = 64;
  float temperature = 0;  // 0 = greedy
  int top_k = 0;          // 0 = off
  float top_p = 1;        // 1 = off
  uint64_t seed = 0;
  std::vector<std::string> stop;
  bool return_routing = false;
  // Report every generated token's logprob and its `top_logprobs` most likely alternatives
  // (GenerateOutput::logprobs). Streaming: on_logprobs gets each batch of tokens just before the delta
  // that carries their text; tokens whose text a stop string cut come after the last delta.
  bool logprobs = false;
  int top_logprobs = 0;
  std::function<void(std::vector<TokenLogprob>)> on_logprobs;
  // The caller's client is gone / its deadline: polled while the request waits or decodes; either ends
  // it (it leaves the batch, its KV cache is freed) with CANCELLED / DEADLINE_EXCEEDED.
  std::function<bool()> cancelled;
  absl::Time deadline = absl::InfiniteFuture();
};

enum class FinishReason { kLength, kStop, kEos };

struct LayerRoutingStats {
  int layer = 0;
  std::vector<int64_t> expert_tokens;  // index = expert
  std::vector<int> overlay_experts;    // experts of this layer served by the tenant's overlay
  double entropy = 0;
};

struct GenerateOutput {
  std::string text;
  FinishReason finish_reason = FinishReason::kLength;
  int64_t version = 0;
  int prompt_tokens = 0;
  int completion_tokens = 0;
  std::vector<LayerRoutingStats> routing;  // with return_routing
  std::vector<TokenLogprob> logprobs;      // with logprobs: one per completion token
};

struct ScoreOutput {
  double total_logprob = 0;
  int64_t num_tokens = 0;
  double perplexity = 0;
  int64_t version = 0;
  std::vector<LayerRoutingStats> routing;
};

struct ResidentVersionInfo {
  std::string tenant_id;
  int64_t version = 0;
  int64_t bytes = 0;
  std::string sha256;
};

struct EngineStatus {
  std::vector<ResidentVersionInfo> resident;
  int64_t resident_bytes = 0;
  int64_t resident_bytes_limit = 0;
  int64_t pending_requests = 0;  // waiting for a batch slot
  std::map<std::string, int64_t> pending_by_tenant;  // the same by tenant
  int64_t active_requests = 0;   // in the running batch
  double tokens_generated = 0;   // since start (for tokens/s)
  int64_t steps = 0;             // batched forward steps run
  int64_t batched_sequences = 0; // sum over steps of the sequences in each step (/ steps = mean batch)
  int64_t max_batch_seen = 0;
  int64_t overlay_pool_slabs = 0;           // preallocated expert-slot slabs for tenant versions
  int64_t overlay_pool_slabs_in_use = 0;
  int64_t overlay_pool_overflow_slots = 0;  // slots loaded outside the full pool
  // Overlay tiers (core/runtime/overlay_cache.h); resident_bytes(_limit) is the device tier.
  int64_t overlay_held_bytes = 0;       // evicted from the device, still used by running requests
  int64_t overlay_host_bytes = 0;
  int64_t overlay_host_bytes_limit = 0;
  int64_t overlay_device_hits = 0;
  int64_t overlay_device_misses = 0;
  int64_t overlay_host_hits = 0;
  int64_t overlay_host_misses = 0;
  int64_t overlay_promotions = 0;
  int64_t overlay_demotions = 0;
  int64_t overlay_host_evictions = 0;
  int64_t overlay_loads_in_flight = 0;
  int64_t overlay_waiting_requests = 0;  // generation requests waiting for their overlay's load
  // The prefix cache (--prefix-cache-bytes; all zero when off).
  // Paged KV pool (core/runtime/kv_cache_pool.h).
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_free = 0;
  int64_t kv_block_tokens = 0;
  int64_t kv_preemptions = 0;              // since start
  int64_t kv_preempted_waiting = 0;        // preempted requests waiting to be readmitted
  int64_t prefix_cache_bytes = 0;          // held now
  int64_t prefix_cache_shared_bytes = 0;   // of those, in blocks running sequences read too
  int64_t prefix_cache_bytes_limit = 0;    // the budget, in whole blocks
  int64_t prefix_cache_block_tokens = 0;
  int64_t prefix_cache_blocks = 0;
  int64_t prefix_cache_capacity_blocks = 0;
  int64_t prefix_cache_hit_blocks = 0;
  int64_t prefix_cache_miss_blocks = 0;
  int64_t prefix_cache_hit_tokens = 0;
  int64_t prefix_cache_evictions = 0;
  int64_t prefix_cache_lookups = 0;
  int64_t prefix_cache_hit_lookups = 0;
};

class InferenceEngine {
 public:
  virtual ~InferenceEngine() = default;

  virtual BackboneInfo Backbone() const = 0;

  // Called with each piece of newly produced text (already stop-string safe: text that might become a
  // stop string is held back until it cannot). Returning false aborts the generation (client gone):
  // the call then returns CANCELLED.
  using DeltaCallback = std::function<bool(std::string_view delta)>;
  virtual absl::StatusOr<GenerateOutput> Generate(const std::string& tenant_id,
                                                  std::optional<int64_t> version,
                                                  const GenerateParams& params,
                                                  const DeltaCallback& on_delta) = 0;

  // Log-likelihood of the input's tokens after the first (a conversation is rendered without a
  // generation prompt).
  virtual absl::StatusOr<ScoreOutput> Score(const std::string& tenant_id, std::optional<int64_t> version,
                                            const TextInput& input, bool return_routing) = 0;

  // Makes `version` (0 = base) the tenant's live version in the runtime. Returns only when every request
  // that starts afterwards is served by it; requests in flight finish on the version they started with.
  virtual absl::Status ServeLive(const std::string& tenant_id, int64_t version) = 0;

  // Drops everything the runtime holds for the tenant (its live entry, resident versions): tenant
  // deletion. Requests in flight finish on what they hold; a request that starts afterwards resolves the
  // tenant afresh through the registry (NOT_FOUND once the tenant is deleted there).
  virtual void ForgetTenant(const std::string& tenant_id) = 0;

  virtual EngineStatus Status() = 0;
};

}  // namespace tessera::services
