// A fixed pool of threads for handler work that blocks for long (generation, scoring, live moves that
// wait on the runtime), so gRPC's callback threads stay free for the quick RPCs. Shutdown() runs the
// queued tasks to completion and joins.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tessera::services {

class WorkPool {
 public:
  explicit WorkPool(int threads);
  ~WorkPool();
  void Submit(std::function<void()> task);
  void Shutdown();

 private:
  void Loop();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace tessera::services
