// A small fixed-size thread pool for the CPU backend's element-wise and attention loops.
//
// ParallelFor(n, grain, fn) splits [0, n) into contiguous chunks of at least `grain` items and runs
// fn(begin, end) on them; it returns once every chunk is done. Work smaller than one grain runs inline,
// so tiny ops pay no synchronization. The pool is process-wide and sized by the process's thread budget
// (core/util/thread_budget.h). Nested calls from inside a worker run inline (no deadlock, no
// oversubscription).
//
// Waiting: a worker that finished a region polls for the next one for up to 200 us (TESSERA_POOL_SPIN_US;
// 0 turns it off) before it sleeps on the condition variable, and a region's caller polls the same way for
// the workers to finish. A decode step is a chain of ~50 short regions with serial work between them, and
// waking a sleeping thread costs tens of microseconds (a futex wake; in a VM, an inter-processor
// interrupt): spinning made a 490M-parameter MoE decode at batch 1 1.2-1.25x faster (55-57 -> 68-72 tok/s,
// ops/bench/RESULTS.md "Decode against llama.cpp"). The spin is bounded, so an idle process sleeps
// (OpenBLAS's 0.1 s spin burnt a core in the server: cpu_blas.h), and it stops while a RunExclusive call
// runs, whose own threads need the cores.
//
// RunExclusive(fn) runs fn on the calling thread while no parallel region runs: for work that brings its
// own threads (a BLAS call OpenBLAS threads), so that it and ParallelFor regions of other threads take turns
// on the budget's threads instead of oversubscribing the cores. Called from inside a region (a worker or a
// region's caller), it runs fn at once.
#pragma once

#include <cstdint>
#include <functional>

namespace tessera {

int NumThreads();
void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t begin, int64_t end)>& fn);
void RunExclusive(const std::function<void()>& fn);

}  // namespace tessera
