// CoreJobRunner: the JobRunner over core/train. For each job, on its own copy of the backbone (so jobs
// never share a backend with serving or with each other):
//   1. parse the training (and optional validation) dataset with the backbone's tokenizer;
//   2. the starting point: the job's base version's overlay (0 = none, the base experts); a LoRA version
//      merged when loaded (core/model/lora_overlay.h), and for a LoRA job also kept as factors;
//   3. expert selection: auto (SelectExpertsAuto with relevance_threshold / max_experts, through the
//      starting overlay) or the explicit slots; on a retry, the slots recorded by the first attempt;
//   4. a working overlay = the base version's slots (carried, frozen) + the selected slots (trainable,
//      initialised from the base version where it has them, else from the base experts); with method
//      "lora" the selected slots train LoRA factors instead (core/train/lora_trainable.h: a LoRA base
//      version's factors continue, at its rank when lora_rank was left unset, else FAILED_PRECONDITION
//      naming lora_rank for another rank; an expert-only base version's slots are the frozen start);
//   5. Trainer with the job's hyperparameters, in segments between checkpoints (saved to the blob store
//      through JobContext; a retry restores the last one and continues exactly), reporting progress;
//   6. the result: the overlay serialized as an expert artifact (safetensors, HF names; method "lora":
//      the LoRA factors, core/train/lora_finetune.h's SerializeLoraArtifact), with val_loss
//      and base_val_loss measured by one function (mean CE over the validation targets) so they and
//      EvaluateVersion's numbers are comparable for auto_promote;
//   7. general ability (with `general_text`, core/train/general_ability.h): the mean loss per token of
//      that text with the result applied and with the bare backbone, for the promotion gate.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <functional>
#include <vector>

#include "core/data/tokenized_example.h"
#include "services/job_runner.h"
#include "services/joint_loops.h"
#include "services/model_host.h"
#include "services/text_codec.h"
#include "storage/registry.h"

namespace tessera::services {

class CoreJobRunner final : public JobRunner {
 public:
  // The backbone every job trains on, loaded once and shared (the server passes the one its inference
  // engine serves; see SharedBackbone). Called at each job's start; its error fails that job.
  using BackboneProvider = std::function<absl::StatusOr<std::shared_ptr<const SharedBackbone>>()>;

  // `work_dir` holds temporary checkpoint files. `memory_limit_bytes` > 0 caps what each job allocates on
  // the device beyond the shared backbone (BackendOptions::memory_limit_bytes): a job that needs more
  // fails with RESOURCE_EXHAUSTED and leaves the rest of the device to serving.
  // `codec` tokenizes the datasets (the backbone's tokenizer and chat template).
  // `max_joint_jobs` > 1: jobs running at the same time on the same backbone train together, up to that
  // many in one loop (services/joint_loops.h, core/train/joint_trainer.h): each keeps its own selection,
  // optimizer, schedule, validation, checkpoints and result exactly as alone, and one job's cancellation
  // or failure leaves the others running. A job joins its loop before it first uses the loop's backend
  // (its selection, starting overlay and evaluations run in its turn) and leaves when it returns.
  // `general_text` (may be null: no general-ability numbers) is the promotion gate's general text,
  // tokenized (GeneralEvalText in core_components.h).
  CoreJobRunner(BackboneProvider backbone, std::shared_ptr<const TextCodec> codec, std::string work_dir,
                int64_t memory_limit_bytes = 0, int max_joint_jobs = 1,
                std::shared_ptr<const std::vector<data::TokenizedExample>> general_text = nullptr)
      : backbone_(std::move(backbone)),
        codec_(std::move(codec)),
        work_dir_(std::move(work_dir)),
        memory_limit_bytes_(memory_limit_bytes),
        general_text_(std::move(general_text)) {
    if (max_joint_jobs > 1) {
      BackendOptions per_job;
      per_job.eager_index_checks = false;
      per_job.memory_limit_bytes = memory_limit_bytes;
      per_job.pool_host_buffers = true;  // a loop's memory goes back to the OS when it ends (host_buffer_pool.h)
      joint_ = std::make_unique<JointLoops>(max_joint_jobs, per_job);
    }
  }

  absl::StatusOr<JobOutput> Run(JobContext& ctx) override;
  absl::StatusOr<double> EvaluateVersion(JobContext& ctx, int64_t version) override;
  void Release(const std::string& job_id) override;

 private:
  absl::StatusOr<JobOutput> Train(JobContext& ctx);  // Run without the out-of-memory explanation

  struct JobState {
    std::unique_ptr<JointLoops::Lease> loop;  // joint mode: the job's place in a shared loop (model = its)
    std::shared_ptr<LoadedModel> model;
    std::vector<data::TokenizedExample> validation;
    int64_t seq_len = 0;
  };
  BackboneProvider backbone_;
  std::shared_ptr<const TextCodec> codec_;
  std::string work_dir_;
  int64_t memory_limit_bytes_ = 0;
  std::unique_ptr<JointLoops> joint_;  // null: every job on a model of its own
  std::shared_ptr<const std::vector<data::TokenizedExample>> general_text_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<JobState>> jobs_;
};

// Mean cross-entropy (nats) over the target tokens (loss_mask) of `examples` (each truncated to
// `seq_len`, at most `max_examples`) under `overlay` (nullptr = base experts).
absl::StatusOr<double> MeanTargetLoss(const Model& model, const ExpertOverlay* overlay,
                                      const std::vector<data::TokenizedExample>& examples, int64_t seq_len,
                                      int64_t max_examples = 256);

}  // namespace tessera::services
