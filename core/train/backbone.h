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
  ModelWeights weights;
  std::string sha256;  // of the weights file (the identity recorded in trained artifacts)
};

absl::StatusOr<Backbone> LoadBackbone(std::string_view spec, Backend* backend,
                                      const std::vector<std::string>& search_path = {});

}  // namespace tessera::train
