// Giving memory the allocator keeps but no longer uses back to the OS.
//
// A fine-tuning job's activations, gradients and optimizer state are freed when it ends, but glibc's
// malloc keeps freed chunks in its per-thread arenas, so without a trim the server's RSS stays near the
// training peak indefinitely (ops/bench/soak measured 488 MiB before and 251 MiB after one
// malloc_trim(0) on builtin:tiny after two jobs). The job scheduler calls this when jobs finish.
#pragma once

namespace tessera::services {

// malloc_trim(0) on glibc (every arena; whole free pages anywhere in a heap, not only at its top);
// nothing elsewhere. Takes milliseconds; safe from any thread.
void ReleaseFreeMemory();

}  // namespace tessera::services
