// The server's bridge to core/: describes the backbone named on the command line and builds the
// dataset validator from its tokenizer (core/data's JSONL parser: line-numbered errors), and the
// factories of the InferenceEngine (RuntimeEngine over core/runtime) and the JobRunner (CoreJobRunner).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "services/server.h"

namespace tessera::services {

struct CoreOptions {
  std::string backbone = "builtin:tiny";  // or a path to an HF model directory, or random:tiny
  std::string device = "cpu";             // "cpu" | "cuda"
  std::string dtype = "auto";             // "auto" | "f32" | "bf16": the backbone's weight matrices
  int64_t expert_cache_bytes = 256 << 20; // resident tenant versions (LRU beyond)
  int max_batch = 16;                     // sequences per decode step (continuous batching)
  std::string decode_routing = "host";    // "host" | "device": MoE grouping of decode steps (RuntimeOptions)
  bool inference = true;                  // build the InferenceEngine
  bool training = true;                   // build the JobRunner
  int64_t train_memory_limit_bytes = 0;   // > 0: each job's device allocations are capped (CoreJobRunner)
  int64_t export_max_shard_bytes = int64_t{2} << 30;  // ExportVersion's default safetensors shard size
};

// Fails with INVALID_ARGUMENT/NOT_FOUND naming --backbone, --device, --dtype or --decode-routing when they
// are unusable.
absl::StatusOr<ServerComponents> MakeCoreComponents(const CoreOptions& options);

// The JSONL validator over the byte-level tokenizer (exposed for tests).
DatasetValidator MakeByteJsonlValidator(int64_t max_tokens_per_example);

}  // namespace tessera::services
