#include "services/checkpoint_exporter.h"

#include <chrono>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/export/checkpoint_export.h"
#include "core/io/file_util.h"
#include "core/model/lora_overlay.h"
#include "core/tokenizer/byte_tokenizer.h"
#include "core/util/status_macros.h"
#include "nlohmann/json.hpp"
#include "services/job_spec.h"
#include "services/version_backbone.h"

namespace tessera::services {
namespace fs = std::filesystem;

absl::StatusOr<std::unique_ptr<CheckpointExporter>> CheckpointExporter::Create(storage::Registry* registry,
                                                                               BackboneGetter backbone,
                                                                               Options options) {
  if (options.work_dir.empty()) return absl::InvalidArgumentError("CheckpointExporter: work_dir is required");
  if (options.default_max_shard_bytes <= 0 || options.max_concurrent < 1) {
    return absl::InvalidArgumentError("CheckpointExporter: shard size and concurrency must be positive");
  }
  std::error_code ec;
  if (fs::is_directory(options.work_dir, ec)) {
    const auto cutoff = fs::file_time_type::clock::now() - std::chrono::hours(24);
    for (const fs::directory_entry& e : fs::directory_iterator(options.work_dir, ec)) {
      if (e.path().filename().string().rfind("export-", 0) != 0) continue;
      std::error_code age_ec;
      if (e.last_write_time(age_ec) < cutoff && !age_ec) fs::remove_all(e.path(), age_ec);
    }
  }
  return std::unique_ptr<CheckpointExporter>(
      new CheckpointExporter(registry, std::move(backbone), std::move(options)));
}

CheckpointExporter::~CheckpointExporter() = default;

absl::StatusOr<std::unique_ptr<ExportDir>> CheckpointExporter::Export(const ExportRequest& r) {
  if (r.version < 0) {
    return absl::InvalidArgumentError(absl::StrCat("version: must be >= 0 (0 = the base), got ", r.version));
  }
  if (r.overlay_only && r.version == 0) {
    return absl::InvalidArgumentError(
        "version: overlay_only needs a version >= 1 (version 0 is the base experts, which have no overlay)");
  }
  if (r.max_shard_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_shard_bytes: must be >= 0 (0 = the server's default), got ", r.max_shard_bytes));
  }
  RETURN_IF_ERROR(registry_->GetTenant(r.tenant_id).status());  // NOT_FOUND for an unknown tenant
  std::optional<storage::ExpertVersion> v;
  if (r.version > 0) {
    ASSIGN_OR_RETURN(v, registry_->GetVersion(r.tenant_id, r.version));
  }
  if (in_flight_->fetch_add(1) >= options_.max_concurrent) {
    in_flight_->fetch_sub(1);
    return absl::ResourceExhaustedError(absl::StrCat(options_.max_concurrent,
                                                     " exports are already running on this server; retry later"));
  }
  absl::StatusOr<std::unique_ptr<ExportDir>> made = ExportDir::Create(options_.work_dir);
  if (!made.ok()) {
    in_flight_->fetch_sub(1);
    return made.status();
  }
  std::unique_ptr<ExportDir> dir = *std::move(made);
  dir->on_release = [counter = in_flight_] { counter->fetch_sub(1); };
  if (r.overlay_only) {
    RETURN_IF_ERROR(WriteOverlayOnly(*v, *dir));
  } else {
    const int64_t shard = r.max_shard_bytes > 0 ? r.max_shard_bytes : options_.default_max_shard_bytes;
    RETURN_IF_ERROR(WriteMerged(r, v.has_value() ? &*v : nullptr, shard, *dir));
  }
  return dir;
}

absl::Status CheckpointExporter::WriteOverlayOnly(const storage::ExpertVersion& v, ExportDir& dir) {
  ASSIGN_OR_RETURN(std::string trained_on, VersionBackboneSha256(*registry_, v));
  ASSIGN_OR_RETURN(std::string bytes, registry_->blobs().Get(v.sha256));  // verifies the digest
  RETURN_IF_ERROR(io::WriteFileAtomically((fs::path(dir.path()) / "overlay.safetensors").string(), bytes));
  nlohmann::json slots = nlohmann::json::array();
  if (absl::StatusOr<std::vector<SlotId>> s = SlotsFromJson(v.slots_json); s.ok()) {
    for (const SlotId& slot : *s) slots.push_back({{"layer", slot.layer}, {"expert", slot.expert}});
  }
  nlohmann::json metrics = nlohmann::json::object();
  if (v.val_loss.has_value()) metrics["val_loss"] = *v.val_loss;
  if (v.base_val_loss.has_value()) metrics["base_val_loss"] = *v.base_val_loss;
  nlohmann::json manifest = {
      {"format", "tessera-overlay-export-v1"},
      {"tenant_id", v.tenant_id},
      {"version", v.version},
      {"parent_version", v.parent_version},
      {"job_id", v.job_id},
      {"slots", slots},
      {"backbone_sha256", trained_on},
      {"weights", "overlay.safetensors"},
      {"weights_sha256", v.sha256},
      {"size_bytes", v.size_bytes},
      {"method", v.method.empty() ? std::string("esft") : v.method},
      {"metrics", metrics},
      {"created_at", absl::FormatTime("%Y-%m-%d%ET%H:%M:%E6SZ", absl::FromUnixMicros(v.created_at_us),
                                      absl::UTCTimeZone())},
  };
  if (v.method == "lora") manifest["lora_rank"] = v.lora_rank;
  RETURN_IF_ERROR(
      io::WriteFileAtomically((fs::path(dir.path()) / "manifest.json").string(), manifest.dump(2) + "\n"));
  dir.files = {"manifest.json", "overlay.safetensors"};
  return absl::OkStatus();
}

absl::Status CheckpointExporter::WriteMerged(const ExportRequest& r, const storage::ExpertVersion* v,
                                             int64_t max_shard_bytes, ExportDir& dir) {
  ASSIGN_OR_RETURN(std::shared_ptr<const SharedBackbone> b, backbone_());
  if (b->dir.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "backbone ", b->spec, " has no checkpoint directory to merge the version into (random weights); "
        "overlay_only exports work"));
  }
  std::string overlay;
  if (v != nullptr) {
    ASSIGN_OR_RETURN(std::string trained_on, VersionBackboneSha256(*registry_, *v));
    RETURN_IF_ERROR(CheckSameBackbone(*v, trained_on, b->info.sha256));
    ASSIGN_OR_RETURN(overlay, registry_->blobs().Get(v->sha256));
    if (IsLoraBlob(overlay)) {
      // A LoRA version is exported merged like any other: its factors merged into dense slot weights by
      // the function the runtime loads it with (core/model/lora_overlay.h), on a backend of the
      // backbone's device, then written as an expert-only overlay.
      ASSIGN_OR_RETURN(std::unique_ptr<LoadedModel> m, ModelOn(b));
      ASSIGN_OR_RETURN(overlay, MergedOverlayBlob(b->config, std::move(overlay), b->weights, m->backend.get()));
    }
  }
  exporting::CheckpointExportOptions o;
  o.backbone_dir = b->dir;
  o.config = b->config;
  o.max_shard_bytes = max_shard_bytes;
  o.shard_metadata = {{"tessera_tenant_id", r.tenant_id},
                      {"tessera_version", std::to_string(r.version)},
                      {"tessera_backbone_sha256", b->info.sha256}};
  if (!fs::exists(fs::path(b->dir) / "tokenizer.json")) {
    // A byte-level backbone: its special ids are the byte tokenizer's, written in no file.
    o.bos_token_id = ByteTokenizer::kBos;
    o.eos_token_id = ByteTokenizer::kEos;
    o.pad_token_id = ByteTokenizer::kPad;
    // What the runtime never samples (core/runtime/scheduler.cc): BOS, PAD, ids past the tokenizer.
    o.suppress_tokens = {ByteTokenizer::kBos, ByteTokenizer::kPad};
    for (int64_t id = ByteTokenizer::kVocabSize; id < b->config.vocab_size; ++id) o.suppress_tokens.push_back(id);
  }
  ASSIGN_OR_RETURN(exporting::ExportedCheckpoint written,
                   exporting::WriteMergedCheckpoint(o, std::move(overlay), dir.path()));
  dir.files = written.files;
  return absl::OkStatus();
}

}  // namespace tessera::services
