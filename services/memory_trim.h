// Giving memory the allocator keeps but no longer uses back to the OS, and measuring the heap.
//
// A fine-tuning job's activations, gradients and optimizer state are freed when it ends, but glibc's
// malloc keeps freed chunks in its per-thread arenas, so without a trim the server's RSS stays near the
// training peak indefinitely (ops/bench/soak measured 488 MiB before and 251 MiB after one
// malloc_trim(0) on builtin:tiny after two jobs). The job scheduler calls this when jobs finish.
//
// HeapStats separates a leak from allocator retention: `in_use_bytes` (mallinfo2's uordblks + hblkhd,
// the bytes the program holds) returns to its level after each job when nothing leaks, while RSS can
// stay above it by the free chunks malloc keeps (`free_bytes`) and pages a trim could not return.
#pragma once

#include <cstdint>

namespace tessera::services {

struct HeapStats {
  int64_t in_use_bytes = 0;  // allocated and not yet freed (arenas + mmapped chunks)
  int64_t free_bytes = 0;    // free chunks malloc keeps in its arenas (retention/fragmentation)
  int64_t mmap_bytes = 0;    // of in_use_bytes: chunks served by mmap (returned to the OS on free)
  int64_t resident_bytes = 0;  // RSS (/proc/self/statm)
};

// Current figures; zeros but resident_bytes off glibc. Walks every arena (locks each briefly): fine for a
// scrape or a log line, not for a hot path.
HeapStats CurrentHeapStats();

// Makes glibc serve every allocation of at least kMallocMmapThreshold bytes with its own mmap (munmap on
// free: the pages go back to the OS at once), for the whole process. Call once, first thing in main.
//
// Why: glibc starts with that threshold but raises it to the size of each mmapped chunk freed (up to
// 32 MiB), so once a job has freed its first large buffers, later ones of up to that size come from
// malloc's arenas, interleaved with the long-lived allocations of the serving threads; after the job,
// pages holding both stay resident and neither free() nor malloc_trim can return them. Training's
// tensors avoid malloc altogether (BackendOptions::pool_host_buffers: mapped once, reused every step);
// this covers the rest (datasets, version blobs, host-side copies), which are few per step, so the
// page faults of their fresh mappings cost little (bench_train tiny: minor faults 80k pooled, 90k
// pooled with this, 89-97k with glibc's default; the threshold alone, tensors included: 440-480k).
// Setting it also stops the dynamic adjustment (mallopt(3)). RESULTS.md "Soak" has the measurements.
inline constexpr int kMallocMmapThreshold = 128 * 1024;
void UseMmapForLargeAllocations();

// malloc_trim(0) on glibc (every arena; whole free pages anywhere in a heap, not only at its top);
// nothing elsewhere. Logs HeapStats before and after. Takes milliseconds; safe from any thread.
void ReleaseFreeMemory();

}  // namespace tessera::services
