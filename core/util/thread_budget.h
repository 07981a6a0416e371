// The process's compute threads: one number for Tessera's own pool and for the BLAS (issue 17 §3).
//
// The budget N is, first to apply: SetThreadBudget(n) (the `--threads` flag of tessera-server,
// tessera-pretrain and the benches), else TESSERA_NUM_THREADS, else the CPUs this process may run on
// (sched_getaffinity, so a container's or taskset's CPU set counts, not the host's cores).
//   - ParallelFor's pool runs N threads: N-1 workers and the calling thread (core/util/parallel.h).
//   - OpenBLAS is loaded single-threaded, and its products above its single-thread size are split over
//     the same pool (Sgemm in core/backend/cpu/cpu_blas.h): there are no BLAS threads to oversubscribe
//     the cores, so when serving and training share a process their parallel work takes turns on the N
//     threads instead of running 2N on N cores.
//
// The budget is fixed by its first use (the pool's creation, or the BLAS's load); SetThreadBudget after
// that is FAILED_PRECONDITION unless it asks for the number already in force.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace tessera {

// n >= 1. Call before the first ParallelFor or BLAS call (e.g. while parsing flags).
absl::Status SetThreadBudget(int n);
// The budget (fixes it: later SetThreadBudget calls with another value fail).
int ThreadBudget();
// "N (from --threads|TESSERA_NUM_THREADS|the CPU set)".
std::string ThreadBudgetString();

}  // namespace tessera
