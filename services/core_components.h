// The server's bridge to core/: describes the backbone named on the command line and builds the
// dataset validator from its tokenizer (core/data's JSONL parser: line-numbered errors), and the
// factories of the InferenceEngine (RuntimeEngine over core/runtime) and the JobRunner (CoreJobRunner).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/data/tokenized_example.h"
#include "core/runtime/context_plan.h"
#include "core/runtime/fair_queue.h"
#include "core/runtime/runtime.h"
#include "services/server.h"
#include "services/text_codec.h"

namespace tessera::services {

struct CoreOptions {
  std::string backbone = "builtin:tiny";  // or a path to an HF model directory, or random:tiny
  std::string device = "cpu";             // "cpu" | "cuda"
  std::string dtype = "auto";             // "auto" | "f32" | "bf16": the backbone's weight matrices
  int64_t expert_cache_bytes = 256 << 20; // overlay device tier (--overlay-device-bytes; LRU beyond)
  int64_t overlay_host_bytes = int64_t{1} << 30;  // overlay host tier (--overlay-host-bytes; 0: none)
  int max_batch = 16;                     // sequences per decode step (continuous batching)
  // Who gets a free batch slot (--admission, --tenant-weight, --max-queued-per-tenant; RuntimeOptions).
  runtime::AdmissionPolicy admission = runtime::AdmissionPolicy::kFair;
  std::map<std::string, int64_t> tenant_weights;
  int64_t max_queued_per_tenant = 64;
  // Context sizing and the paged KV pool (runtime::PlanContext): positions per request =
  // min(max_position_embeddings, max_context when > 0, what the pool in kv_memory_bytes holds).
  int64_t max_context = 0;                                        // --max-context (0: the model's)
  int64_t kv_memory_bytes = runtime::kDefaultKvMemoryBytes;       // --kv-memory-bytes
  int64_t kv_block_tokens = runtime::kDefaultKvBlockTokens;       // --kv-block-tokens
  int64_t prefix_cache_bytes = 0;  // --prefix-cache-bytes: KV blocks of computed prompts (0: off)
  int64_t max_step_tokens = 0;     // --max-step-tokens: chunked prefill's per-step token budget (0: off)
  std::string decode_routing = "host";    // "host" | "device": MoE grouping of decode steps (RuntimeOptions)
  bool inference = true;                  // build the InferenceEngine
  bool training = true;                   // build the JobRunner
  int64_t train_memory_limit_bytes = 0;   // > 0: each job's device allocations are capped (CoreJobRunner)
  int max_joint_jobs = 1;                 // jobs on the backbone trained in one loop (CoreJobRunner); 1: alone
  int64_t export_max_shard_bytes = int64_t{2} << 30;  // ExportVersion's default safetensors shard size
  // The promotion gate's general text (--general-eval-data): JSON Lines of {"text": ...}; empty: see
  // GeneralEvalText.
  std::string general_eval_data;
  // The runtime's RuntimeOptions::on_step (tests: holding the scheduler at an exact step); null: none.
  std::function<void(const runtime::StepInfo&)> on_step;
};

// The general-ability text jobs are measured on (the promotion gate, core/train/general_ability.h),
// tokenized with `codec`: the `general_eval_data` file when given (INVALID_ARGUMENT naming
// --general-eval-data and the line for a bad file or a non-text line); else for builtin:* and random:*
// backbones 256 held-out documents of tessera-pretrain's corpus (the mixture builtin:tiny was pretrained
// on); else null (no general text: the gate decides on validation alone).
absl::StatusOr<std::shared_ptr<const std::vector<data::TokenizedExample>>> GeneralEvalText(
    const CoreOptions& options, const TextCodec& codec);

// Fails with INVALID_ARGUMENT/NOT_FOUND naming --backbone, --device, --dtype, --decode-routing,
// --max-context or --kv-memory-bytes when they are unusable (the engine factory fails with
// RESOURCE_EXHAUSTED naming --kv-memory-bytes when not even 2 positions per sequence fit).
absl::StatusOr<ServerComponents> MakeCoreComponents(const CoreOptions& options);

// The JSONL validator over a backbone's tokenizer and chat template (exposed for tests).
DatasetValidator MakeJsonlValidator(std::shared_ptr<const TextCodec> codec, int64_t max_tokens_per_example);

}  // namespace tessera::services
