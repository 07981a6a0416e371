// Loading the frozen backbone for the server: "builtin:<name>" / an HF directory via core/train's
// locator, or "random:tiny" (the builtin:tiny architecture with fixed random weights: an untrained
// model for tests and for machines without the pretrained checkpoint; answers are noise, but every
// code path is the real one).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/backend/backend.h"
#include "core/model/model.h"
#include "services/backbone_info.h"

namespace tessera::services {

struct LoadedModel {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
  BackboneInfo info;
};

// `device`: "cpu" or "cuda". Errors name --backbone / --device.
absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModel(const std::string& spec, const std::string& device);

// The BackboneInfo of a config (no weights loaded).
BackboneInfo DescribeConfig(const std::string& name, const ModelConfig& config, const std::string& device);

}  // namespace tessera::services
