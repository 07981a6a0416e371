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

// The frozen backbone, loaded once per server process and shared read-only by the inference engine
// and every training job (training only writes overlay copies). Each of those computes on a backend of
// its own (on CUDA: its own stream), over these same weight tensors.
struct SharedBackbone {
  std::string spec;
  std::string dir;       // the checkpoint directory it was loaded from ("" for random:<name>)
  std::string device;
  std::string dtype;         // "f32" or "bf16" (weights.matrix_dtype())
  std::string stored_dtype;  // the checkpoint's ("f32", "bf16", "f16"); "f32" for random:
  ModelConfig config;
  ModelWeights weights;  // complete on the device before this is returned (the loader synchronized)
  BackboneInfo info;
};

// `device`: "cpu" or "cuda". `dtype`: the weight matrices' serving dtype, "f32", "bf16" or "auto" (the
// checkpoint's: bf16 for a BF16 or F16 checkpoint, f32 otherwise; train::ResolveMatrixDtype). Checkpoint
// weights are read straight into it (ModelWeights::Load: no f32 staging copy); random: weights are made in
// f32 and converted. Everything built on them (KV caches, tenant overlays, training copies with f32
// masters) follows. Errors name --backbone / --device / --dtype.
absl::StatusOr<std::shared_ptr<const SharedBackbone>> LoadSharedBackbone(const std::string& spec,
                                                                         const std::string& device,
                                                                         const std::string& dtype = "f32");
// INVALID_ARGUMENT naming --dtype unless `dtype` is "auto", "f32" or "bf16".
absl::Status ValidateDtype(const std::string& dtype);

struct LoadedModel {
  std::shared_ptr<const SharedBackbone> backbone;  // first: its weights outlive the model below
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
  BackboneInfo info;
};

// A model over the shared weights with a fresh backend of the backbone's device. The inference engine
// asks for a high-priority backend (on CUDA: the highest stream priority), so serving steps are
// scheduled ahead of a training job's queued kernels.
absl::StatusOr<std::unique_ptr<LoadedModel>> ModelOn(std::shared_ptr<const SharedBackbone> backbone,
                                                     const BackendOptions& options = {});

// LoadSharedBackbone + ModelOn: a backbone of its own (tests, tools).
absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModel(const std::string& spec, const std::string& device,
                                                       const std::string& dtype = "f32");

// One line saying what is served: name, family, parameters, experts per layer, dtype, context, tokenizer.
std::string DescribeBackbone(const BackboneInfo& info);

// The BackboneInfo of a config (no weights loaded).
BackboneInfo DescribeConfig(const std::string& name, const ModelConfig& config, const std::string& device);

}  // namespace tessera::services
