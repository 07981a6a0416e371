// CheckpointGate: holds a real training job right after its first checkpoint, so a test can act "while
// the job is running and has a checkpoint" (back up, restart, kill) without racing the trainer. Waiting
// for a step count and hoping the job is not done yet fails on a slow or busy machine; here the job
// cannot advance until the test says so.
//
// Use: TestServerOptions::wrap_runner = gate.Wrapper(); the wrapped runner's JobContext stores the first
// checkpoint (the job row names it when SaveCheckpoint returns) and then blocks until the job must stop
// (cancelled, lease lost, server stopping). Later checkpoints pass straight through.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "services/job_runner.h"

namespace tessera::services::testing {

class CheckpointGate {
 public:
  // For TestServerOptions::wrap_runner. The gate must outlive the server.
  std::function<std::unique_ptr<JobRunner>(std::unique_ptr<JobRunner>)> Wrapper() {
    return [this](std::unique_ptr<JobRunner> inner) -> std::unique_ptr<JobRunner> {
      return std::make_unique<Runner>(std::move(inner), this);
    };
  }

  // True once a job is held at its first checkpoint (false after `timeout`).
  bool WaitHeld(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoMilliseconds(timeout), [this] { return held_; });
  }

 private:
  // Called after the first checkpoint was stored: blocks until the job is told to stop.
  void Hold(JobContext& ctx) {
    std::unique_lock<std::mutex> lock(mu_);
    if (used_) return;
    used_ = true;
    held_ = true;
    cv_.notify_all();
    lock.unlock();
    while (!ctx.ShouldStop()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    lock.lock();
    held_ = false;
  }

  class Context final : public JobContext {
   public:
    Context(JobContext& inner, CheckpointGate* gate) : inner_(inner), gate_(gate) {}
    const storage::Job& job() const override { return inner_.job(); }
    const JobSpec& spec() const override { return inner_.spec(); }
    bool ShouldStop() override { return inner_.ShouldStop(); }
    absl::StatusOr<std::string> ReadDataset(const std::string& dataset_id) override {
      return inner_.ReadDataset(dataset_id);
    }
    absl::StatusOr<std::string> ReadVersionWeights(int64_t version, const std::string& backbone_sha256) override {
      return inner_.ReadVersionWeights(version, backbone_sha256);
    }
    void ReportSelection(const std::vector<SlotId>& slots, const std::vector<double>& scores) override {
      inner_.ReportSelection(slots, scores);
    }
    void ReportProgress(const storage::JobProgress& progress) override { inner_.ReportProgress(progress); }
    void ReportEval(int64_t step, double val_loss, double base_val_loss) override {
      inner_.ReportEval(step, val_loss, base_val_loss);
    }
    void Log(const std::string& message) override { inner_.Log(message); }
    absl::Status SaveCheckpoint(std::string_view bytes) override {
      absl::Status s = inner_.SaveCheckpoint(bytes);
      if (s.ok()) gate_->Hold(inner_);
      return s;
    }
    absl::StatusOr<std::optional<std::string>> LoadCheckpoint() override { return inner_.LoadCheckpoint(); }

   private:
    JobContext& inner_;
    CheckpointGate* gate_;
  };

  class Runner final : public JobRunner {
   public:
    Runner(std::unique_ptr<JobRunner> inner, CheckpointGate* gate) : inner_(std::move(inner)), gate_(gate) {}
    absl::StatusOr<JobOutput> Run(JobContext& ctx) override {
      Context gated(ctx, gate_);
      return inner_->Run(gated);
    }
    absl::StatusOr<double> EvaluateVersion(JobContext& ctx, int64_t version) override {
      return inner_->EvaluateVersion(ctx, version);
    }
    void Release(const std::string& job_id) override { inner_->Release(job_id); }

   private:
    std::unique_ptr<JobRunner> inner_;
    CheckpointGate* gate_;
  };

  std::mutex mu_;
  std::condition_variable cv_;
  bool used_ = false;      // only the first checkpoint holds
  bool held_ = false;
};

}  // namespace tessera::services::testing
