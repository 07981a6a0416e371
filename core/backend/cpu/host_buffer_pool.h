// HostBufferPool: the large host buffers of a CPU backend whose work repeats the same shapes (a
// training job: one step's activations, gradients and temporaries, step after step), from mmap,
// reused by size, and given back to the OS when the backend goes away.
//
// Why not malloc: glibc raises its mmap threshold to the size of each mmapped chunk freed, so after a
// job's first step its tensors come from malloc's arenas, interleaved with the long-lived allocations of
// the server's other threads; when the job ends, pages that hold both stay resident, and neither free()
// nor malloc_trim can return them (ops/bench/soak: 78-180 MiB of free chunks kept and RSS up to +17%
// after two jobs on random:tiny while in-use bytes were flat). A fixed threshold (every large buffer its
// own mmap) returns the memory but pays a page fault per 4 KiB on every step (bench_train tiny: 5x the
// minor faults). Here a buffer is mapped once and reused by the following steps.
//
// Contract: Allocate(bytes) returns page-aligned, uninitialized memory (a reused buffer holds old data)
// of at least `bytes` (rounded up to a size class: Rounded), nullptr if mmap fails; Release(p, bytes)
// takes it back with the same `bytes`. Released buffers are kept for a later Allocate of the same class
// while the bytes mapped (in use + kept) stay within kMaxMappedPerPeak x the most ever in use at once
// (a step's temporaries of different sizes come one after another, so one peak's worth is not enough
// to reuse them all); an Allocate that would exceed that unmaps kept buffers first (largest first). So
// what the pool holds is bounded by the backend's own peak. Close()
// (the backend's destructor) unmaps every kept buffer, and buffers released after it are unmapped at
// once. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>

namespace tessera::cpu {

class HostBufferPool {
 public:
  // Smaller allocations stay with malloc (its bins reuse them well and they are not what fragments).
  static constexpr size_t kMinBytes = size_t{128} << 10;
  static constexpr size_t kMaxMappedPerPeak = 2;

  HostBufferPool() = default;
  HostBufferPool(const HostBufferPool&) = delete;
  HostBufferPool& operator=(const HostBufferPool&) = delete;
  ~HostBufferPool();

  void* Allocate(size_t bytes);
  void Release(void* p, size_t bytes);
  void Close();

  struct Stats {
    int64_t in_use_bytes = 0;
    int64_t kept_bytes = 0;
    int64_t peak_in_use_bytes = 0;
    int64_t maps = 0;    // mmap calls so far
    int64_t reuses = 0;  // Allocates served from a kept buffer
  };
  Stats stats() const;

  // The size class of `bytes`: whole pages; from 4 pages up, a multiple of a quarter of the largest
  // power of two <= bytes (so at most 25% above it).
  static size_t Rounded(size_t bytes);

 private:
  void UnmapKeptLocked(size_t until_mapped);  // unmaps kept buffers until in use + kept <= until_mapped

  mutable std::mutex mu_;
  std::multimap<size_t, void*> kept_;  // rounded size -> buffer
  size_t in_use_ = 0;
  size_t kept_bytes_ = 0;
  size_t peak_ = 0;
  int64_t maps_ = 0;
  int64_t reuses_ = 0;
  bool closed_ = false;
};

}  // namespace tessera::cpu
