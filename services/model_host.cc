#include "services/model_host.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/io/file_util.h"
#include "core/train/backbone.h"
#include "nlohmann/json.hpp"

namespace tessera::services {

constexpr uint64_t kRandomBackboneSeed = 20261123;

std::string DescribeBackbone(const BackboneInfo& b) {
  std::string out = absl::StrCat(b.name, " (", b.architecture, "): ", b.total_parameters, " parameters (",
                                 b.expert_parameters, " in experts), ", b.num_layers, " layers x ", b.num_experts,
                                 " experts, top-", b.experts_per_token);
  if (!b.dtype.empty()) {
    absl::StrAppend(&out, ", dtype ", b.dtype);
    if (b.stored_dtype != b.dtype) absl::StrAppend(&out, " (stored ", b.stored_dtype, ")");
  }
  if (b.context > 0) {
    absl::StrAppend(&out, ", context ", b.context, " of max_position_embeddings ", b.max_seq_len);
  } else {
    absl::StrAppend(&out, ", max_position_embeddings ", b.max_seq_len);
  }
  if (!b.tokenizer.empty()) absl::StrAppend(&out, ", tokenizer ", b.tokenizer);
  return out;
}

BackboneInfo DescribeConfig(const std::string& name, const ModelConfig& config, const std::string& device) {
  BackboneInfo b;
  b.name = name;
  b.architecture = ModelFamilyName(config.family);
  b.total_parameters = config.NumParameters();
  b.expert_parameters = config.ExpertParameters() * config.num_layers * config.num_experts;
  b.num_layers = static_cast<int>(config.num_layers);
  b.hidden_size = static_cast<int>(config.hidden_size);
  b.num_experts = static_cast<int>(config.num_experts);
  b.experts_per_token = static_cast<int>(config.top_k);
  b.max_seq_len = static_cast<int>(config.max_position_embeddings);
  b.expert_dim = static_cast<int>(config.expert_dim);
  b.device = device;
  return b;
}

namespace {

absl::StatusOr<std::unique_ptr<Backend>> MakeDeviceBackend(const std::string& device,
                                                           const BackendOptions& options = {}) {
  absl::StatusOr<std::unique_ptr<Backend>> backend = MakeBackend(device, options);
  if (!backend.ok()) {
    return absl::Status(backend.status().code(), absl::StrCat("--device ", device, ": ", backend.status().message()));
  }
  return backend;
}

}  // namespace

absl::Status ValidateDtype(const std::string& dtype) {
  if (dtype != "auto" && dtype != "f32" && dtype != "bf16") {
    return absl::InvalidArgumentError(absl::StrCat("--dtype: expected auto, f32 or bf16, got \"", dtype, "\""));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const SharedBackbone>> LoadSharedBackbone(const std::string& spec,
                                                                         const std::string& device,
                                                                         const std::string& dtype) {
  if (absl::Status s = ValidateDtype(dtype); !s.ok()) return s;
  // The loading backend only allocates and uploads; the tensors keep its device context alive.
  absl::StatusOr<std::unique_ptr<Backend>> loader = MakeDeviceBackend(device);
  if (!loader.ok()) return loader.status();
  auto b = std::make_shared<SharedBackbone>();
  b->spec = spec;
  b->device = device;
  b->stored_dtype = "f32";
  std::string sha256;
  if (absl::StartsWith(spec, "random:")) {
    absl::StatusOr<ModelConfig> c = ModelConfig::Builtin(absl::StrCat("builtin:", spec.substr(7)));
    if (!c.ok()) return absl::NotFoundError(absl::StrCat("--backbone ", spec, ": ", c.status().message()));
    b->config = *c;
    absl::StatusOr<ModelWeights> w = ModelWeights::RandomInit(b->config, kRandomBackboneSeed, loader->get());
    if (!w.ok()) return w.status();
    b->weights = *std::move(w);
    if (dtype == "bf16") {
      // Converted on the device; the f32 originals are freed when the last handle (this one) goes.
      absl::StatusOr<ModelWeights> converted = b->weights.WithMatrixDtype(b->config, DType::kBF16, loader->get());
      if (!converted.ok()) return converted.status();
      b->weights = *std::move(converted);
    }
  } else {
    // Read straight into the serving dtype (no f32 copy of the model on the way).
    absl::StatusOr<train::Backbone> loaded = train::LoadBackbone(spec, loader->get(), {}, dtype);
    if (!loaded.ok()) {
      return absl::Status(loaded.status().code(), absl::StrCat("--backbone ", spec, ": ", loaded.status().message()));
    }
    b->config = loaded->config;
    b->dir = loaded->files.dir;
    b->weights = std::move(loaded->weights);
    b->stored_dtype = DTypeName(loaded->stored_dtype);
    sha256 = loaded->sha256;
  }
  b->dtype = DTypeName(b->weights.matrix_dtype());
  // Other backends (streams) read these weights from now on: the uploads must have landed.
  if (absl::Status s = (*loader)->Synchronize(); !s.ok()) return s;
  b->info = DescribeConfig(spec, b->config, device);
  b->info.sha256 = sha256;
  b->info.dtype = b->dtype;
  b->info.stored_dtype = b->stored_dtype;
  return std::shared_ptr<const SharedBackbone>(std::move(b));
}

absl::StatusOr<std::unique_ptr<LoadedModel>> ModelOn(std::shared_ptr<const SharedBackbone> backbone,
                                                     const BackendOptions& options) {
  auto m = std::make_unique<LoadedModel>();
  absl::StatusOr<std::unique_ptr<Backend>> backend = MakeDeviceBackend(backbone->device, options);
  if (!backend.ok()) return backend.status();
  m->backend = *std::move(backend);
  // ModelWeights holds tensor handles: this copies handles, not weights.
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Create(backbone->config, backbone->weights, m->backend.get());
  if (!model.ok()) return model.status();
  m->model = *std::move(model);
  m->info = backbone->info;
  m->backbone = std::move(backbone);
  return m;
}

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModel(const std::string& spec, const std::string& device,
                                                       const std::string& dtype) {
  absl::StatusOr<std::shared_ptr<const SharedBackbone>> b = LoadSharedBackbone(spec, device, dtype);
  if (!b.ok()) return b.status();
  return ModelOn(*std::move(b));
}

}  // namespace tessera::services
