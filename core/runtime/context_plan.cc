// PlanContext (see context_plan.h).
#include "core/runtime/context_plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/model/kv_block_pool.h"
#include "core/model/kv_cache.h"

namespace tessera::runtime {
namespace {

std::string Bytes(int64_t n) {
  if (n >= (int64_t{1} << 30)) return absl::StrFormat("%.1f GiB", static_cast<double>(n) / (1 << 30));
  if (n >= (int64_t{1} << 20)) return absl::StrFormat("%.1f MiB", static_cast<double>(n) / (1 << 20));
  return absl::StrCat(n, " B");
}

}  // namespace

absl::StatusOr<ContextPlan> PlanContext(const ModelConfig& config, DType kv_dtype, int max_batch,
                                        int64_t max_context, int64_t kv_memory_bytes, int64_t block_tokens) {
  if (max_batch < 1) return absl::InvalidArgumentError(absl::StrCat("max_batch must be >= 1, got ", max_batch));
  if (max_context < 0 || max_context == 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-context must be >= 2 (or 0: the model's), got ", max_context));
  }
  if (kv_memory_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("--kv-memory-bytes must be > 0, got ", kv_memory_bytes));
  }
  if (block_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--kv-block-tokens must be >= 1, got ", block_tokens));
  }
  ContextPlan p;
  p.model_context = config.max_position_embeddings;
  p.max_batch = max_batch;
  p.kv_memory_bytes = kv_memory_bytes;
  p.block_tokens = block_tokens;
  p.bytes_per_position = std::max<int64_t>(1, KvCache::BytesPerPosition(config, kv_dtype));
  p.requested_context = p.model_context;
  p.limited_by = ContextPlan::Limit::kModel;
  if (max_context > 0 && max_context < p.model_context) {
    p.requested_context = max_context;
    p.limited_by = ContextPlan::Limit::kMaxContext;
  }
  p.max_context_above_model = max_context > p.model_context;
  const int64_t budget_blocks = kv_memory_bytes / p.bytes_per_position / block_tokens;
  const int64_t full_blocks =
      static_cast<int64_t>(max_batch) * KvBlockPool::BlocksFor(p.requested_context, block_tokens);
  p.num_blocks = std::min(budget_blocks, full_blocks);
  p.capacity = p.requested_context;
  if (p.num_blocks * block_tokens < p.capacity) {
    p.capacity = p.num_blocks * block_tokens;
    p.limited_by = ContextPlan::Limit::kMemory;
  }
  if (p.capacity < 2) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "--kv-memory-bytes ", kv_memory_bytes, " holds ", p.num_blocks * block_tokens, " KV positions (",
        p.bytes_per_position, " bytes a position, blocks of --kv-block-tokens ", block_tokens, "); a context of ",
        p.requested_context, " needs ", p.requested_context * p.bytes_per_position,
        " bytes: raise --kv-memory-bytes or lower --max-context"));
  }
  p.pool_bytes = p.num_blocks * block_tokens * p.bytes_per_position;
  return p;
}

std::string ContextPlan::Describe() const {
  std::string why;
  switch (limited_by) {
    case Limit::kModel: why = "the model's max_position_embeddings"; break;
    case Limit::kMaxContext: why = "--max-context"; break;
    case Limit::kMemory:
      why = absl::StrCat("reduced from ", requested_context, " to what --kv-memory-bytes holds");
      break;
  }
  const int64_t full = num_blocks / std::max<int64_t>(1, KvBlockPool::BlocksFor(capacity, block_tokens));
  std::string out = absl::StrCat("context ", capacity, " positions per request (", why, "); paged KV pool ",
                                 num_blocks, " blocks of ", block_tokens, " positions x ", bytes_per_position,
                                 " B = ", Bytes(pool_bytes), " of --kv-memory-bytes ", Bytes(kv_memory_bytes),
                                 ", shared by --max-batch ", max_batch, " sequences (", std::min<int64_t>(full, max_batch),
                                 " at full context)");
  if (max_context_above_model) {
    absl::StrAppend(&out, "; --max-context exceeds the model's max_position_embeddings ", model_context,
                    ", which is used instead");
  }
  return out;
}

std::string ContextPlan::RaiseHint() const {
  switch (limited_by) {
    case Limit::kModel:
      return absl::StrCat("the model's max_position_embeddings (", model_context, ") is the limit");
    case Limit::kMaxContext:
      return absl::StrCat("raise it with --max-context (the model allows ", model_context, ")");
    case Limit::kMemory:
      return absl::StrCat("raise it with --kv-memory-bytes (now ", kv_memory_bytes, ", ", bytes_per_position,
                          " bytes a position; the KV pool holds ", num_blocks * block_tokens,
                          " positions shared by every request); the model allows ", requested_context);
  }
  return "";
}

}  // namespace tessera::runtime
