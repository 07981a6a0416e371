#include "services/joint_loops.h"

#include <algorithm>

namespace tessera::services {

JointLoops::Lease::~Lease() { owner_->Release(loop_.get()); }

absl::StatusOr<std::unique_ptr<JointLoops::Lease>> JointLoops::Acquire(
    std::shared_ptr<const SharedBackbone> backbone) {
  std::lock_guard<std::mutex> lock(mu_);
  for (Entry& e : entries_) {
    if (e.backbone == backbone.get() && e.jobs < max_jobs_) {
      ++e.jobs;
      return std::unique_ptr<Lease>(new Lease(this, e.loop));
    }
  }
  BackendOptions options = per_job_;
  if (options.memory_limit_bytes > 0) options.memory_limit_bytes *= max_jobs_;
  const SharedBackbone* key = backbone.get();
  absl::StatusOr<std::unique_ptr<LoadedModel>> model = ModelOn(std::move(backbone), options);
  if (!model.ok()) return model.status();
  auto loop = std::make_shared<Loop>();
  loop->model = *std::move(model);
  loop->group = train::JointGroup::Create(loop->model->model.get());
  entries_.push_back({key, loop, 1});
  return std::unique_ptr<Lease>(new Lease(this, loop));
}

int JointLoops::loops() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(entries_.size());
}

void JointLoops::Release(const Loop* loop) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find_if(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.loop.get() == loop; });
  if (it == entries_.end()) return;
  if (--it->jobs == 0) entries_.erase(it);
}

}  // namespace tessera::services
