#include "services/work_pool.h"

namespace tessera::services {

WorkPool::WorkPool(int threads, int64_t max_queued_per_key, runtime::AdmissionPolicy policy)
    : max_queued_per_key_(max_queued_per_key), tasks_(runtime::FairQueueOptions{policy, 1, {}, 1}) {
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
}

WorkPool::~WorkPool() { Shutdown(); }

void WorkPool::Submit(const std::string& key, std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_) {
      tasks_.Push(key, 1, std::move(task));
      cv_.notify_one();
      return;
    }
  }
  task();  // after shutdown: run inline rather than drop (the RPC must still finish)
}

bool WorkPool::TrySubmit(const std::string& key, std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_) {
      if (max_queued_per_key_ > 0 && static_cast<int64_t>(tasks_.size(key)) >= max_queued_per_key_) return false;
      tasks_.Push(key, 1, std::move(task));
      cv_.notify_one();
      return true;
    }
  }
  task();
  return true;
}

void WorkPool::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

int WorkPool::busy() {
  std::lock_guard<std::mutex> lock(mu_);
  return busy_;
}

std::map<std::string, int64_t> WorkPool::Waiting() {
  std::lock_guard<std::mutex> lock(mu_);
  return tasks_.Depths();
}

void WorkPool::Loop() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !tasks_.empty(); });
      if (tasks_.empty()) return;
      task = tasks_.Pop();
      ++busy_;
    }
    task();
    std::lock_guard<std::mutex> lock(mu_);
    --busy_;
  }
}

}  // namespace tessera::services
