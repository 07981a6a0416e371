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
  int hidden_size = 0;
  int num_experts = 0;  // per MoE layer
  int experts_per_token = 0;
  int max_seq_len = 0;  // the context window (max_position_embeddings)
  int expert_dim = 0;   // a routed expert's intermediate size (0 = not known); bounds lora_rank
  std::string sha256;   // of the weights
  std::string device;   // "cpu" / "cuda:0 (...)"
  // Known once the weights are loaded (empty / 0 before):
  std::string dtype;         // serving dtype of the weight matrices, "f32" / "bf16"
  std::string stored_dtype;  // the checkpoint's, "f32" / "bf16" / "f16"
  std::string tokenizer;     // TextCodec::Describe(): kind, vocabulary, chat template source
  // Known once the inference engine is built (0 without one):
  int64_t context = 0;         // positions per request (prompt + completion), runtime::PlanContext
  int64_t kv_cache_bytes = 0;  // the preallocated KV pool
  std::string context_note;    // ContextPlan::Describe(): what limited the context
};

}  // namespace tessera::services
