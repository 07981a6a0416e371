// Context sizing: how many positions (prompt + completion) each request may use, from the model's
// context, an optional cap and a KV memory budget. The KV cache pool preallocates `max_batch` caches of
// that capacity (kv_cache_pool.h), so the budget bounds max_batch * capacity * bytes per position:
//
//   capacity = min(max_position_embeddings,
//                  max_context                                   (when given: > 0),
//                  kv_memory_bytes / (max_batch * KvCache::BytesPerPosition(config, kv dtype)))
//
// `limited_by` records which term won: it names the knob (server flag) that raises the context, for the
// start-up log and for the error a prompt that does not fit gets (Runtime, kv_capacity_hint).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "core/model/config.h"
#include "core/tensor/tensor.h"

namespace tessera::runtime {

// The server's default --kv-memory-bytes: 4 GiB. builtin:tiny needs 64 MiB for 16 sequences of its 2048
// positions in f32; a 48-layer model with 4 KV heads of 128 in bf16 (~96 KiB a position) gets ~2.7K
// positions for each of 16 sequences, so a long-context model on a large device should raise it.
constexpr int64_t kDefaultKvMemoryBytes = int64_t{4} << 30;

struct ContextPlan {
  enum class Limit { kModel, kMaxContext, kMemory };
  int64_t capacity = 0;            // positions per request
  int64_t model_context = 0;       // max_position_embeddings
  int64_t requested_context = 0;   // min(model_context, max_context if given)
  int64_t bytes_per_position = 0;  // one sequence, every layer, K and V
  int64_t pool_bytes = 0;          // max_batch * capacity * bytes_per_position
  int max_batch = 0;
  int64_t kv_memory_bytes = 0;
  Limit limited_by = Limit::kModel;
  bool max_context_above_model = false;  // --max-context exceeded max_position_embeddings (clamped)

  // One line for the start-up log, e.g. "context 2048 positions per request (the model's
  // max_position_embeddings); KV pool 16 x 2048 x 2048 B = 64.0 MiB of --kv-memory-bytes 4.0 GiB".
  std::string Describe() const;
  // What raises the capacity, for a prompt that does not fit: names --max-context, --kv-memory-bytes
  // (or --max-batch), or says the model's max_position_embeddings is the limit.
  std::string RaiseHint() const;
};

// INVALID_ARGUMENT naming --max-context (when 1) / --kv-memory-bytes (<= 0) / max_batch (< 1);
// RESOURCE_EXHAUSTED naming --kv-memory-bytes and --max-batch when the budget holds fewer than 2
// positions per sequence (the bytes it would need for that).
absl::StatusOr<ContextPlan> PlanContext(const ModelConfig& config, DType kv_dtype, int max_batch,
                                        int64_t max_context, int64_t kv_memory_bytes);

}  // namespace tessera::runtime
