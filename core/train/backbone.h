// Locating and loading a backbone: "builtin:<name>" (the shipped checkpoint directory
// "builtin-<name>" under a backbone search path) or a path to an HF model directory (config.json +
// model.safetensors or its sharded index).
//
// Search path for builtin backbones, in order: the `search_path` argument, then the directories in
// $TESSERA_BACKBONE_PATH (colon-separated), then the repository's ops/backbones (compiled in).
// NOT_FOUND lists every directory tried and the command that makes the checkpoint.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/weights.h"

namespace tessera::train {

struct BackboneFiles {
  std::string dir;           // the checkpoint directory
  std::string config_path;   // dir/config.json
  std::string weights_path;  // dir/model.safetensors (or the sharded index)
};

std::vector<std::string> DefaultBackboneSearchPath();

absl::StatusOr<BackboneFiles> LocateBackbone(std::string_view spec,
                                             const std::vector<std::string>& search_path = {});

struct Backbone {
  BackboneFiles files;
  ModelConfig config;
  ModelWeights weights;  // matrices in the serving dtype (weights.matrix_dtype())
  DType stored_dtype = DType::kF32;  // how the checkpoint stores its matrices (the embedding's dtype)
  std::string config_dtype;          // config.json's "dtype" / "torch_dtype" ("" when absent)
  // The identity recorded in trained artifacts: for a single file, the sha256 of model.safetensors; for a
  // sharded checkpoint, the sha256 of the index file's bytes followed by every shard's bytes, shards in
  // sorted file-name order.
  std::string sha256;
};

// The serving dtype rule. `requested` is "f32" or "bf16" (used as given), or "auto": the dtype config.json
// declares (`config_dtype`: its "dtype", or "torch_dtype" as older transformers write it): "bfloat16" or
// "float16" -> bf16 (F16 is rounded: weight matrices are f32 or bf16), "float32" -> f32; when it declares
// none, the dtype the checkpoint stores its matrices in (`stored`, the embedding's): BF16/F16 -> bf16,
// else f32. (builtin:tiny declares float32 and is served in f32, though its file holds BF16 values.)
// INVALID_ARGUMENT naming --dtype for another `requested`.
absl::StatusOr<DType> ResolveMatrixDtype(std::string_view requested, std::string_view config_dtype, DType stored);

// Locates `spec`, reads config.json and loads the weights (ModelWeights::Load: straight into the serving
// dtype, no f32 staging copy of the model) with matrices in ResolveMatrixDtype(`dtype`).
absl::StatusOr<Backbone> LoadBackbone(std::string_view spec, Backend* backend,
                                      const std::vector<std::string>& search_path = {},
                                      std::string_view dtype = "f32");

}  // namespace tessera::train
