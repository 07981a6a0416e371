#include "services/model_host.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/train/backbone.h"

namespace tessera::services {

constexpr uint64_t kRandomBackboneSeed = 20261123;

BackboneInfo DescribeConfig(const std::string& name, const ModelConfig& config, const std::string& device) {
  BackboneInfo b;
  b.name = name;
  b.architecture = ModelFamilyName(config.family);
  b.total_parameters = config.NumParameters();
  b.expert_parameters = config.ExpertParameters() * config.num_layers * config.num_experts;
  b.num_layers = static_cast<int>(config.num_layers);
  b.num_experts = static_cast<int>(config.num_experts);
  b.experts_per_token = static_cast<int>(config.top_k);
  b.max_seq_len = static_cast<int>(config.max_position_embeddings);
  b.device = device;
  return b;
}

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModel(const std::string& spec, const std::string& device) {
  auto m = std::make_unique<LoadedModel>();
  absl::StatusOr<std::unique_ptr<Backend>> backend = MakeBackend(device);
  if (!backend.ok()) {
    return absl::Status(backend.status().code(), absl::StrCat("--device ", device, ": ", backend.status().message()));
  }
  m->backend = *std::move(backend);
  ModelConfig config;
  ModelWeights weights;
  std::string sha256;
  if (absl::StartsWith(spec, "random:")) {
    absl::StatusOr<ModelConfig> c = ModelConfig::Builtin(absl::StrCat("builtin:", spec.substr(7)));
    if (!c.ok()) return absl::NotFoundError(absl::StrCat("--backbone ", spec, ": ", c.status().message()));
    config = *c;
    absl::StatusOr<ModelWeights> w = ModelWeights::RandomInit(config, kRandomBackboneSeed, m->backend.get());
    if (!w.ok()) return w.status();
    weights = *std::move(w);
  } else {
    absl::StatusOr<train::Backbone> b = train::LoadBackbone(spec, m->backend.get());
    if (!b.ok()) return absl::Status(b.status().code(), absl::StrCat("--backbone ", spec, ": ", b.status().message()));
    config = b->config;
    weights = std::move(b->weights);
    sha256 = b->sha256;
  }
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Create(config, std::move(weights), m->backend.get());
  if (!model.ok()) return model.status();
  m->model = *std::move(model);
  m->info = DescribeConfig(spec, config, device);
  m->info.sha256 = sha256;
  return m;
}

}  // namespace tessera::services
