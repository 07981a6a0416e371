// What the services layer needs to know about the loaded backbone: its shape (to validate expert slots
// and sequence lengths in job requests) and its identity (for GetRuntimeStatus).
#pragma once

#include <cstdint>
#include <string>

namespace tessera::services {

struct BackboneInfo {
  std::string name;          // "builtin:tiny" or a path
  std::string architecture;  // HF model_type, e.g. "qwen3_moe"
  int64_t total_parameters = 0;
  int64_t expert_parameters = 0;  // all routed experts together
  int num_layers = 0;
  int num_experts = 0;  // per MoE layer
  int experts_per_token = 0;
  int max_seq_len = 0;  // the context window
  std::string sha256;   // of the weights
  std::string device;   // "cpu" / "cuda:0 (...)"
  std::string tokenizer;  // TextCodec::Describe(): kind, vocabulary, chat template source
};

}  // namespace tessera::services
