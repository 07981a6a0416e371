// A small fixed-size thread pool for the CPU backend's element-wise and attention loops.
//
// ParallelFor(n, grain, fn) splits [0, n) into contiguous chunks of at least `grain` items and runs
// fn(begin, end) on them; it returns once every chunk is done. Work smaller than one grain runs inline,
// so tiny ops pay no synchronization. The pool is process-wide and sized from TESSERA_NUM_THREADS or
// the hardware concurrency. Nested calls from inside a worker run inline (no deadlock, no oversubscription).
#pragma once

#include <cstdint>
#include <functional>

namespace tessera {

int NumThreads();
void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t begin, int64_t end)>& fn);

}  // namespace tessera
