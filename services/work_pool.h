// A fixed pool of threads for handler work that blocks for long (generation, scoring, live moves that
// wait on the runtime), so gRPC's callback threads stay free for the quick RPCs. Shutdown() runs the
// queued tasks to completion and joins.
//
// Tasks carry a key (the tenant, or "" for shared work) and wait in a FairQueue
// (core/runtime/fair_queue.h): when every thread is busy, a free thread takes the next task by
// round-robin across keys (each task costs 1), so one tenant's burst does not queue ahead of every
// other tenant's next request. With max_queued_per_key > 0, TrySubmit refuses a task whose key already
// has that many waiting (the caller answers RESOURCE_EXHAUSTED) instead of queueing without bound.
//
// The server runs two: the inference pool (Generate, Score, dataset stores) and the control pool
// (Promote, Rollback, DeleteTenant): control work never waits behind inference.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/runtime/fair_queue.h"

namespace tessera::services {

class WorkPool {
 public:
  // `policy`: kFair (round-robin across keys) or kFifo (arrival order).
  explicit WorkPool(int threads, int64_t max_queued_per_key = 0,
                    runtime::AdmissionPolicy policy = runtime::AdmissionPolicy::kFair);
  ~WorkPool();
  void Submit(std::function<void()> task) { Submit("", std::move(task)); }
  void Submit(const std::string& key, std::function<void()> task);
  // False (and `task` not run) when `key` already has max_queued_per_key tasks waiting.
  bool TrySubmit(const std::string& key, std::function<void()> task);
  void Shutdown();

  int threads() const { return static_cast<int>(threads_.size()); }
  int busy();                               // threads running a task
  std::map<std::string, int64_t> Waiting();  // waiting tasks by key

 private:
  void Loop();
  const int64_t max_queued_per_key_;
  std::mutex mu_;
  std::condition_variable cv_;
  runtime::FairQueue<std::function<void()>> tasks_;
  bool stop_ = false;
  int busy_ = 0;
  std::vector<std::thread> threads_;
};

}  // namespace tessera::services
