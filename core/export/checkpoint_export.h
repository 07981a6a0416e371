// Writing a standalone Hugging Face checkpoint: a backbone checkpoint directory with a tenant overlay's
// expert tensors merged in (core/model/overlay.h: an overlay blob holds its slots under the family's HF
// expert names, so merging is replacing those tensors by name).
//
// Output directory (must exist and be empty):
//   config.json              the backbone's, verbatim (every key a real checkpoint has survives)
//   generation_config.json   the backbone's when it has one; else {bos,eos,pad}_token_id from its
//                            config.json, falling back to the ids in the options, and
//                            "suppress_tokens" (ids greedy decoding must never pick) when given
//   model.safetensors        when every tensor fits in one shard of max_shard_bytes; else
//   model-0000k-of-0000n.safetensors + model.safetensors.index.json ({"metadata":{"total_size"},
//                            "weight_map"}), as transformers' save_pretrained names them. Tensors are
//                            packed in name order, a new shard starting when the next tensor would
//                            overflow the current one (a tensor larger than the limit gets a shard alone).
//   tokenizer files          those of kTokenizerFiles present in the backbone directory, verbatim
// The base tensors are copied byte for byte from the backbone's (mmap'ed) shards, in the dtype it
// stores them in. The overlay's tensors are written as f32, the values the version holds: Tessera
// serves exactly those (an f32 server) or their bf16 rounding (a --dtype bf16 server, whose jobs write
// bf16-representable values anyway), so rounding them to a narrower backbone dtype (builtin:tiny stores
// bf16) would make the export compute something Tessera never served. A loader that casts to one
// dtype (transformers' dtype=...) then gets what Tessera computes in that dtype. Each shard's
// "__metadata__" is {"format": "pt"} plus `shard_metadata`. Shards are streamed to disk tensor by tensor: memory use is one overlay, not a shard.
//
// A family whose checkpoints store the experts fused (granitemoe: hf::FusedExpertSource) gets the
// overlay's slots written into their slices of the fused tensors; such a fused tensor is written as f32
// (its other experts' values widened exactly), for the reason above.
//
// Errors: an overlay tensor that is not an expert tensor of the config's family -> INVALID_ARGUMENT
// naming it; one absent from the backbone or of another shape -> FAILED_PRECONDITION naming both; I/O
// errors name the file.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/config.h"

namespace tessera::exporting {

// Tokenizer files copied from the backbone directory when present.
inline constexpr const char* kTokenizerFiles[] = {
    "tokenizer.json",          "tokenizer_config.json", "special_tokens_map.json",
    "chat_template.jinja",     "chat_template.json",    "tokenizer.model",
    "vocab.json",              "merges.txt",            "added_tokens.json",
};

struct CheckpointExportOptions {
  std::string backbone_dir;  // config.json + model.safetensors or model.safetensors.index.json
  ModelConfig config;  // the backbone's (expert names, fused layouts)
  int64_t max_shard_bytes = int64_t{2} << 30;
  std::map<std::string, std::string> shard_metadata;
  // generation_config.json fallbacks (a byte-level backbone's tokenizer ids live in no file).
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> eos_token_id;
  std::optional<int64_t> pad_token_id;
  // Ids Tessera never samples (a byte-level backbone: BOS, PAD and the rows past its tokenizer), so that
  // transformers' generate() decodes as Tessera does.
  std::vector<int64_t> suppress_tokens;
};

struct ExportedCheckpoint {
  std::vector<std::string> files;  // relative paths written, sorted
  int num_shards = 0;
  int merged_tensors = 0;  // overlay tensors that replaced base tensors
};

// `overlay_safetensors` empty = no overlay (the base checkpoint, re-sharded).
absl::StatusOr<ExportedCheckpoint> WriteMergedCheckpoint(const CheckpointExportOptions& options,
                                                         std::string overlay_safetensors,
                                                         const std::string& out_dir);

}  // namespace tessera::exporting
