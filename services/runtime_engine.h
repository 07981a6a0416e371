// RuntimeEngine: the server's InferenceEngine over core/runtime (continuous batching across tenants,
// expert table published by RCU, bytes-bounded overlay cache), with the registry as the runtime's
// VersionSource (live pointers, version blobs verified by sha256 on read).
#pragma once

#include <memory>

#include "core/runtime/runtime.h"
#include "core/runtime/version_source.h"
#include "core/tokenizer/tokenizer.h"
#include "services/inference_engine.h"
#include "services/model_host.h"
#include "services/text_codec.h"
#include "storage/registry.h"

namespace tessera::services {

// The registry as the runtime's source of live pointers and weights. A version trained on a backbone
// other than `backbone_sha256` is refused (FAILED_PRECONDITION, services/version_backbone.h): every
// path that serves a version (live, pinned, promoted) loads it through here.
class RegistryVersionSource final : public runtime::VersionSource {
 public:
  RegistryVersionSource(storage::Registry* registry, std::string backbone_sha256)
      : registry_(registry), backbone_sha256_(std::move(backbone_sha256)) {}
  absl::StatusOr<int64_t> LiveVersion(const std::string& tenant) override;
  absl::StatusOr<runtime::VersionBlob> LoadVersion(const std::string& tenant, int64_t version) override;

 private:
  storage::Registry* registry_;
  const std::string backbone_sha256_;
};

class RuntimeEngine final : public InferenceEngine {
 public:
  // `codec` turns requests' prompts and conversations into token ids (the backbone's tokenizer).
  static absl::StatusOr<std::unique_ptr<RuntimeEngine>> Create(storage::Registry* registry,
                                                                std::unique_ptr<LoadedModel> model,
                                                                std::shared_ptr<const TextCodec> codec,
                                                                const runtime::RuntimeOptions& options);
  ~RuntimeEngine() override;

  BackboneInfo Backbone() const override { return model_->info; }
  absl::StatusOr<GenerateOutput> Generate(const std::string& tenant_id, std::optional<int64_t> version,
                                          const GenerateParams& params, const DeltaCallback& on_delta) override;
  absl::StatusOr<ScoreOutput> Score(const std::string& tenant_id, std::optional<int64_t> version,
                                    const TextInput& input, bool return_routing) override;
  absl::Status ServeLive(const std::string& tenant_id, int64_t version) override;
  void ForgetTenant(const std::string& tenant_id) override;
  EngineStatus Status() override;

 private:
  RuntimeEngine() = default;
  std::unique_ptr<LoadedModel> model_;
  std::shared_ptr<const TextCodec> codec_;
  std::unique_ptr<RegistryVersionSource> source_;
  std::unique_ptr<runtime::Runtime> runtime_;
};

}  // namespace tessera::services
