#include "services/core_components.h"

#include <memory>
#include <mutex>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/data/jsonl_dataset.h"
#include "core/model/config.h"
#include "core/io/file_util.h"
#include "core/train/backbone.h"
#include "core/train/general_ability.h"
#include "services/checkpoint_exporter.h"
#include "services/runtime_engine.h"
#include "services/log.h"
#include "services/model_host.h"
#include "services/text_codec.h"
#include "services/train_runner.h"

namespace tessera::services {

DatasetValidator MakeJsonlValidator(std::shared_ptr<const TextCodec> codec, int64_t max_tokens_per_example) {
  return [codec, max_tokens_per_example](std::string_view bytes) -> absl::StatusOr<DatasetStats> {
    data::DatasetLimits limits;
    limits.max_bytes = bytes.size() + 1;  // the server's own size limit applied while streaming
    limits.max_tokens_per_example = max_tokens_per_example;
    absl::StatusOr<data::ParsedDataset> parsed = codec->ParseDataset(bytes, limits);
    if (!parsed.ok()) return parsed.status();
    DatasetStats stats;
    stats.num_examples = static_cast<int64_t>(parsed->examples.size());
    stats.num_tokens = parsed->num_tokens;
    stats.num_loss_tokens = parsed->num_loss_tokens;
    return stats;
  };
}

absl::StatusOr<std::shared_ptr<const std::vector<data::TokenizedExample>>> GeneralEvalText(
    const CoreOptions& options, const TextCodec& codec) {
  if (!options.general_eval_data.empty()) {
    absl::StatusOr<std::string> bytes = io::ReadFileToString(options.general_eval_data);
    if (!bytes.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--general-eval-data ", options.general_eval_data, ": ",
                                                     bytes.status().message()));
    }
    absl::StatusOr<data::ParsedDataset> parsed = codec.ParseDataset(*bytes);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--general-eval-data ", options.general_eval_data, ": ",
                                                     parsed.status().message()));
    }
    if (parsed->num_text != static_cast<int64_t>(parsed->examples.size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--general-eval-data ", options.general_eval_data,
          ": every line must be {\"text\": ...} (general text, scored on every token); found ",
          parsed->num_prompt_completion + parsed->num_chat, " prompt/completion or messages lines"));
    }
    return std::make_shared<const std::vector<data::TokenizedExample>>(std::move(parsed->examples));
  }
  if (absl::StartsWith(options.backbone, "builtin:") || absl::StartsWith(options.backbone, "random:")) {
    return std::make_shared<const std::vector<data::TokenizedExample>>(
        train::PretrainingMixtureHeldOut(codec.tokenizer(), 256));
  }
  return std::shared_ptr<const std::vector<data::TokenizedExample>>();
}

absl::StatusOr<ServerComponents> MakeCoreComponents(const CoreOptions& options) {
  if (options.device != "cpu" && options.device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device: expected cpu or cuda, got \"", options.device, "\""));
  }
  if (absl::Status s = ValidateDtype(options.dtype); !s.ok()) return s;
  if (options.max_context < 0 || options.max_context == 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-context: expected >= 2 (or 0: the model's), got ", options.max_context));
  }
  if (options.kv_block_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--kv-block-tokens: expected >= 1, got ", options.kv_block_tokens));
  }
  if (options.kv_memory_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("--kv-memory-bytes: expected > 0, got ", options.kv_memory_bytes));
  }
  if (options.max_step_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-step-tokens: expected >= 0 (0: off), got ", options.max_step_tokens));
  }
  if (options.prefix_cache_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--prefix-cache-bytes: expected >= 0 (0: off), got ", options.prefix_cache_bytes));
  }
  if (options.decode_routing != "host" && options.decode_routing != "device") {
    return absl::InvalidArgumentError(
        absl::StrCat("--decode-routing: expected host or device, got \"", options.decode_routing, "\""));
  }
  absl::StatusOr<ModelConfig> config =
      absl::StartsWith(options.backbone, "builtin:") ? ModelConfig::Builtin(options.backbone)
      : absl::StartsWith(options.backbone, "random:")
          ? ModelConfig::Builtin(absl::StrCat("builtin:", options.backbone.substr(7)))
          : ModelConfig::FromFile(options.backbone);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat("--backbone ", options.backbone, ": ", config.status().message()));
  }
  // The tokenizer and chat template are read now (cheap), so a bad tokenizer.json stops the start and
  // dataset uploads are validated before the weights are loaded.
  std::string dir;
  if (!absl::StartsWith(options.backbone, "random:")) {
    absl::StatusOr<train::BackboneFiles> files = train::LocateBackbone(options.backbone);
    if (!files.ok()) {
      return absl::Status(files.status().code(), absl::StrCat("--backbone ", options.backbone, ": ",
                                                              files.status().message()));
    }
    dir = files->dir;
  }
  absl::StatusOr<std::shared_ptr<const TextCodec>> codec = TextCodec::ForBackbone(options.backbone, dir, *config);
  if (!codec.ok()) return codec.status();
  ServerComponents c;
  c.backbone = DescribeConfig(options.backbone, *config, options.device);
  // One backbone load per process, on first use, shared by the engine and every training job.
  struct OnceBackbone {
    std::mutex mu;
    std::optional<absl::StatusOr<std::shared_ptr<const SharedBackbone>>> loaded;
  };
  auto once = std::make_shared<OnceBackbone>();
  auto backbone = [once, options]() -> absl::StatusOr<std::shared_ptr<const SharedBackbone>> {
    std::lock_guard<std::mutex> lock(once->mu);
    if (!once->loaded.has_value()) once->loaded = LoadSharedBackbone(options.backbone, options.device, options.dtype);
    return *once->loaded;
  };
  if (options.inference) {
    c.make_engine = [backbone, options, codec = *codec](storage::Registry* registry) -> absl::StatusOr<std::unique_ptr<InferenceEngine>> {
      absl::StatusOr<std::shared_ptr<const SharedBackbone>> b = backbone();
      if (!b.ok()) return b.status();
      BackendOptions serving;
      serving.high_priority = true;  // ahead of training jobs' kernels on a shared GPU
      // The model validates token ids on the host and makes every other index itself: no synchronizing
      // range check per gather/scatter (a bad index would still fail the step at its read-back).
      serving.eager_index_checks = false;
      absl::StatusOr<std::unique_ptr<LoadedModel>> m = ModelOn(*std::move(b), serving);
      if (!m.ok()) return m.status();
      absl::StatusOr<runtime::ContextPlan> plan =
          runtime::PlanContext((*m)->model->config(), (*m)->model->weights().matrix_dtype(), options.max_batch,
                               options.max_context, options.kv_memory_bytes, options.kv_block_tokens);
      if (!plan.ok()) return plan.status();
      (*m)->info.tokenizer = codec->Describe();
      (*m)->info.context = plan->capacity;
      (*m)->info.kv_cache_bytes = plan->pool_bytes;
      (*m)->info.context_note = plan->Describe();
      LogInfo("context", {{"capacity", plan->capacity}, {"plan", plan->Describe()}});
      runtime::RuntimeOptions ro;
      ro.kv_capacity = plan->capacity;
      ro.kv_block_tokens = plan->block_tokens;
      ro.kv_blocks = plan->num_blocks;
      ro.kv_capacity_hint = plan->RaiseHint();
      ro.overlay_cache_bytes = options.expert_cache_bytes;
      ro.overlay_host_bytes = options.overlay_host_bytes;
      ro.max_batch = options.max_batch;
      ro.admission = options.admission;
      ro.tenant_weights = options.tenant_weights;
      ro.max_queue_per_tenant = static_cast<int>(options.max_queued_per_tenant);
      ro.always_collect_routing = true;  // per-tenant expert utilization metrics for every request
      ro.decode_routing = options.decode_routing == "device" ? MoeRouting::kOnDevice : MoeRouting::kHostPlan;
      ro.prefix_cache_bytes = options.prefix_cache_bytes;
      ro.max_step_tokens = options.max_step_tokens;
      ro.backbone_digest = (*m)->info.sha256;
      ro.on_step = options.on_step;
      absl::StatusOr<std::unique_ptr<RuntimeEngine>> e = RuntimeEngine::Create(registry, *std::move(m), codec, ro);
      if (!e.ok()) return e.status();
      return std::unique_ptr<InferenceEngine>(*std::move(e));
    };
  }
  if (options.training) {
    const int64_t limit = options.train_memory_limit_bytes;
    const int joint = options.max_joint_jobs;
    absl::StatusOr<std::shared_ptr<const std::vector<data::TokenizedExample>>> general =
        GeneralEvalText(options, **codec);
    if (!general.ok()) return general.status();
    c.make_runner = [backbone, limit, joint, codec = *codec, general = *general](
                        storage::Registry* registry) -> absl::StatusOr<std::unique_ptr<JobRunner>> {
      return std::unique_ptr<JobRunner>(
          std::make_unique<CoreJobRunner>(backbone, codec, registry->data_dir() + "/work", limit, joint, general));
    };
  }
  const int64_t shard = options.export_max_shard_bytes;
  c.make_exporter = [backbone, shard](storage::Registry* registry) -> absl::StatusOr<std::unique_ptr<VersionExporter>> {
    CheckpointExporter::Options xo;
    xo.work_dir = registry->data_dir() + "/export";
    xo.default_max_shard_bytes = shard;
    absl::StatusOr<std::unique_ptr<CheckpointExporter>> x = CheckpointExporter::Create(registry, backbone, xo);
    if (!x.ok()) return x.status();
    return std::unique_ptr<VersionExporter>(*std::move(x));
  };
  c.validate_dataset = MakeJsonlValidator(*codec, std::min<int64_t>(2048, config->max_position_embeddings));
  c.backbone.tokenizer = (*codec)->Describe();
  return c;
}

}  // namespace tessera::services
