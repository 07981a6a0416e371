// JobRunner: executes one fine-tuning job (expert selection + training) for the JobScheduler.
// The scheduler owns the job's lifecycle in the registry (claim, lease heartbeats, publishing the
// version, promotion, the terminal state); the runner only computes, reporting through JobContext.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/job_spec.h"
#include "storage/types.h"

namespace tessera::services {

class JobContext {
 public:
  virtual ~JobContext() = default;
  virtual const storage::Job& job() const = 0;
  virtual const JobSpec& spec() const = 0;
  // True once the job was cancelled, its lease was lost, or the server is stopping: return promptly
  // (with CANCELLED).
  virtual bool ShouldStop() = 0;

  // The raw bytes of one of the job's tenant's datasets.
  virtual absl::StatusOr<std::string> ReadDataset(const std::string& dataset_id) = 0;
  // The stored weights (safetensors bytes) of the tenant's `version` (>= 1). FAILED_PRECONDITION naming
  // both digests when it was trained on a backbone other than `backbone_sha256` (services/
  // version_backbone.h; "" = the runner's backbone has no digest: not checked).
  virtual absl::StatusOr<std::string> ReadVersionWeights(int64_t version, const std::string& backbone_sha256) = 0;

  // Reporting: recorded in the registry (progress on the job row) and as job events for WatchJob.
  virtual void ReportSelection(const std::vector<SlotId>& slots, const std::vector<double>& scores) = 0;
  virtual void ReportProgress(const storage::JobProgress& progress) = 0;
  virtual void ReportEval(int64_t step, double val_loss, double base_val_loss) = 0;
  virtual void Log(const std::string& message) = 0;

  // Resumable state: stored as a blob, named by the job's checkpoint field. LoadCheckpoint returns
  // nullopt when the job has none (first attempt, or no checkpoint written yet).
  virtual absl::Status SaveCheckpoint(std::string_view bytes) = 0;
  virtual absl::StatusOr<std::optional<std::string>> LoadCheckpoint() = 0;
};

struct JobOutput {
  std::string weights;          // safetensors bytes of the trained overlay (HF tensor names)
  std::vector<SlotId> slots;    // the slots it overrides
  double val_loss = 0;          // the result's validation loss
  double base_val_loss = 0;     // the job's base version's loss on the same validation data
  std::string backbone_sha256;  // the backbone it was trained on (recorded on the version)
  std::string method = "esft";  // how: "esft" or "lora" (recorded on the version)
  int64_t lora_rank = 0;        // lora: the rank trained with
  // General ability (the promotion gate, core/train/general_ability.h): mean loss per token of the
  // runner's general text with the result applied and with the bare backbone (version 0). Unset when
  // the runner has no general text (the gate then decides on validation alone).
  std::optional<double> general_loss;
  std::optional<double> base_general_loss;
};

class JobRunner {
 public:
  virtual ~JobRunner() = default;
  // Runs selection + training; CANCELLED when ctx.ShouldStop() interrupted it.
  virtual absl::StatusOr<JobOutput> Run(JobContext& ctx) = 0;
  // Validation loss of the tenant's `version` (0 = base) on the same validation data Run used; the
  // scheduler asks for it when the live version differs from the job's base (auto_promote's rule).
  virtual absl::StatusOr<double> EvaluateVersion(JobContext& ctx, int64_t version) = 0;
  // The scheduler is done with the job (after Run and any EvaluateVersion): drop per-job state.
  virtual void Release(const std::string& job_id) { (void)job_id; }
};

}  // namespace tessera::services
