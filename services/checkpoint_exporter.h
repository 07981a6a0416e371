// CheckpointExporter: the server's VersionExporter over core/export.
//
// Full export of version N (or 0 = the base): the backbone's checkpoint directory with the version's
// overlay merged into its experts (core/export/checkpoint_export.h: config.json, sharded safetensors
// in the backbone's stored dtypes, generation_config.json, tokenizer files), so that
// transformers.AutoModelForCausalLM.from_pretrained(DIR) computes what Tessera serves for that tenant
// and version. Refused (FAILED_PRECONDITION) for a version trained on another backbone
// (services/version_backbone.h) and for a backbone without a checkpoint directory (random:<name>).
// Each shard's metadata names tessera_tenant_id, tessera_version and tessera_backbone_sha256.
//
// overlay_only export of version N >= 1: overlay.safetensors (the version's stored blob, byte for
// byte: the tenant's slots under HF expert names, f32; its sha256 is the version's sha256) and
// manifest.json:
//   {"format": "tessera-overlay-export-v1", "tenant_id", "version", "parent_version", "job_id",
//    "slots": [{"layer","expert"}], "backbone_sha256", "weights": "overlay.safetensors",
//    "weights_sha256", "size_bytes", "metrics": {"val_loss","base_val_loss"} (those known),
//    "created_at" (RFC 3339 UTC)}
// It needs no backbone, so a version of another backbone can still be taken out this way.
// A LoRA version (method "lora"): the full export merges its factors (as the runtime does when it loads
// it), so the checkpoint is a plain HF one like any version's; overlay_only gives its stored blob as is
// -- the factors (PEFT-style <expert>.lora_A/.lora_B.weight, rank and alpha in the metadata, plus any
// dense slots it carries), not merged slots: that is the version's identity (sha256) and its small form,
// and merging needs the backbone, which overlay_only promises not to need. The manifest says
// "method": "lora" and "lora_rank" (other versions: "method": "esft").
//
// Resources: an export occupies disk under work_dir (a full one: the size of the checkpoint) from its
// start until the handler has streamed it. At most max_concurrent exports exist at once; another is
// RESOURCE_EXHAUSTED (retry later). Create removes export directories older than a day under work_dir
// (left by a process that died mid-export; several servers may share the data dir, so younger ones may
// be another process's, in flight).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "services/model_host.h"
#include "services/version_exporter.h"
#include "storage/registry.h"

namespace tessera::services {

class CheckpointExporter final : public VersionExporter {
 public:
  using BackboneGetter = std::function<absl::StatusOr<std::shared_ptr<const SharedBackbone>>()>;
  struct Options {
    std::string work_dir;  // exports are written under it, each in a directory of its own
    int64_t default_max_shard_bytes = int64_t{2} << 30;
    int max_concurrent = 2;
  };

  static absl::StatusOr<std::unique_ptr<CheckpointExporter>> Create(storage::Registry* registry,
                                                                    BackboneGetter backbone, Options options);
  ~CheckpointExporter() override;

  absl::StatusOr<std::unique_ptr<ExportDir>> Export(const ExportRequest& request) override;

 private:
  CheckpointExporter(storage::Registry* registry, BackboneGetter backbone, Options options)
      : registry_(registry), backbone_(std::move(backbone)), options_(std::move(options)) {}
  absl::Status WriteOverlayOnly(const storage::ExpertVersion& v, ExportDir& dir);
  absl::Status WriteMerged(const ExportRequest& request, const storage::ExpertVersion* v,
                           int64_t max_shard_bytes, ExportDir& dir);

  storage::Registry* registry_;
  BackboneGetter backbone_;
  Options options_;
  // Exports in flight; shared with their ExportDirs, which may outlive a stopping exporter.
  std::shared_ptr<std::atomic<int>> in_flight_ = std::make_shared<std::atomic<int>>(0);
};

}  // namespace tessera::services
