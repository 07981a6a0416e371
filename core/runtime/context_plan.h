// Context sizing: how many positions (prompt + completion) each request may use, and how large the
// paged KV pool is (kv_cache_pool.h), from the model's context, an optional cap, a KV memory budget and
// the KV block size. Sequences share the pool's blocks, so the budget no longer divides by max_batch:
//
//   requested  = min(max_position_embeddings, max_context (when given: > 0))
//   num_blocks = min(kv_memory_bytes / (block_tokens * BytesPerPosition),       the budget
//                    max_batch * ceil(requested / block_tokens))                 never more than every
//                                                                               slot at full context
//   capacity   = min(requested, num_blocks * block_tokens)
//
// `limited_by` records which term won: it names the knob (server flag) that raises the context, for the
// start-up log and for the error a prompt that does not fit gets (Runtime, kv_capacity_hint). When the
// pool holds fewer than max_batch full contexts, short and long requests share it, and the runtime
// admits by free blocks and preempts under pressure (scheduler.cc).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "core/model/config.h"
#include "core/tensor/tensor.h"

namespace tessera::runtime {

// The server's default --kv-memory-bytes: 4 GiB. builtin:tiny needs 64 MiB for 16 sequences of its 2048
// positions in f32 (so its pool is that, not 4 GiB); a 48-layer model with 4 KV heads of 128 in bf16
// (~96 KiB a position) gets a pool of ~43K positions shared by its sequences.
constexpr int64_t kDefaultKvMemoryBytes = int64_t{4} << 30;
// The server's default --kv-block-tokens: positions per KV block (vLLM's default too).
constexpr int64_t kDefaultKvBlockTokens = 16;

struct ContextPlan {
  enum class Limit { kModel, kMaxContext, kMemory };
  int64_t capacity = 0;            // positions per request
  int64_t model_context = 0;       // max_position_embeddings
  int64_t requested_context = 0;   // min(model_context, max_context if given)
  int64_t bytes_per_position = 0;  // one sequence, every layer, K and V
  int64_t block_tokens = 0;        // positions per KV block
  int64_t num_blocks = 0;          // blocks in the pool
  int64_t pool_bytes = 0;          // num_blocks * block_tokens * bytes_per_position
  int max_batch = 0;
  int64_t kv_memory_bytes = 0;
  Limit limited_by = Limit::kModel;
  bool max_context_above_model = false;  // --max-context exceeded max_position_embeddings (clamped)

  // One line for the start-up log, e.g. "context 2048 positions per request (the model's
  // max_position_embeddings); paged KV pool 2048 blocks of 16 positions x 2048 B = 64.0 MiB of
  // --kv-memory-bytes 4.0 GiB, shared by --max-batch 16 sequences (16 at full context)".
  std::string Describe() const;
  // What raises the capacity, for a prompt that does not fit: names --max-context, --kv-memory-bytes,
  // or says the model's max_position_embeddings is the limit.
  std::string RaiseHint() const;
};

// INVALID_ARGUMENT naming --max-context (when 1) / --kv-memory-bytes (<= 0) / --kv-block-tokens (< 1) /
// max_batch (< 1); RESOURCE_EXHAUSTED naming --kv-memory-bytes when the budget holds fewer than 2
// positions (the bytes a full context would need).
absl::StatusOr<ContextPlan> PlanContext(const ModelConfig& config, DType kv_dtype, int max_batch,
                                        int64_t max_context, int64_t kv_memory_bytes,
                                        int64_t block_tokens = kDefaultKvBlockTokens);

}  // namespace tessera::runtime
