// JointLoops: the training loops that several fine-tuning jobs on the same backbone share
// (tessera-server --max-joint-jobs N; core/train/joint_trainer.h).
//
// A loop is one model over the shared backbone weights on a backend of its own (as a solo job has),
// plus a JointGroup. Acquire gives a job a lease on a loop of its backbone with room for one more job
// (at most max_jobs_per_loop), starting a new loop when every one is full; the lease is held while the
// job trains and until the scheduler has released the job, and its destruction frees the place (the loop
// itself goes when its last job does). The loop's backend is capped at max_jobs_per_loop times the
// per-job memory limit (a loop holds up to that many jobs' optimizer state and activations).
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "core/train/joint_trainer.h"
#include "services/model_host.h"

namespace tessera::services {

class JointLoops {
 public:
  struct Loop {
    std::shared_ptr<LoadedModel> model;
    std::shared_ptr<train::JointGroup> group;
  };
  class Lease {
   public:
    ~Lease();
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Loop& loop() const { return *loop_; }

   private:
    friend class JointLoops;
    Lease(JointLoops* owner, std::shared_ptr<Loop> loop) : owner_(owner), loop_(std::move(loop)) {}
    JointLoops* owner_;
    std::shared_ptr<Loop> loop_;
  };

  // `per_job` is the backend options a solo job gets (memory_limit_bytes per job).
  JointLoops(int max_jobs_per_loop, BackendOptions per_job)
      : max_jobs_(max_jobs_per_loop < 1 ? 1 : max_jobs_per_loop), per_job_(per_job) {}

  // The leases must not outlive this object.
  absl::StatusOr<std::unique_ptr<Lease>> Acquire(std::shared_ptr<const SharedBackbone> backbone);
  int max_jobs_per_loop() const { return max_jobs_; }
  int loops() const;

 private:
  struct Entry {
    const SharedBackbone* backbone;
    std::shared_ptr<Loop> loop;
    int jobs;
  };
  void Release(const Loop* loop);

  const int max_jobs_;
  const BackendOptions per_job_;
  mutable std::mutex mu_;
  std::vector<Entry> entries_;
};

}  // namespace tessera::services
