// See memory_trim.h.
#include "services/memory_trim.h"

#include <unistd.h>

#include <cstdio>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "services/log.h"

namespace tessera::services {
namespace {

// Resident bytes of this process (/proc/self/statm), 0 if unreadable.
long long ResidentBytes() {
  long long pages_total = 0, pages_resident = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  const int n = std::fscanf(f, "%lld %lld", &pages_total, &pages_resident);
  std::fclose(f);
  return n == 2 ? pages_resident * ::sysconf(_SC_PAGESIZE) : 0;
}

}  // namespace

HeapStats CurrentHeapStats() {
  HeapStats s;
#if defined(__GLIBC__)
  const struct mallinfo2 mi = mallinfo2();
  s.in_use_bytes = static_cast<int64_t>(mi.uordblks + mi.hblkhd);
  s.free_bytes = static_cast<int64_t>(mi.fordblks);
  s.mmap_bytes = static_cast<int64_t>(mi.hblkhd);
#endif
  s.resident_bytes = ResidentBytes();
  return s;
}

void UseMmapForLargeAllocations() {
#if defined(__GLIBC__)
  if (mallopt(M_MMAP_THRESHOLD, kMallocMmapThreshold) != 1) {
    LogError("mallopt(M_MMAP_THRESHOLD) failed: large freed buffers may stay in malloc's arenas");
  }
#endif
}

void ReleaseFreeMemory() {
#if defined(__GLIBC__)
  const HeapStats before = CurrentHeapStats();
  malloc_trim(0);
  const HeapStats after = CurrentHeapStats();
  LogInfo("released free memory to the OS", {{"rss_before_bytes", before.resident_bytes},
                                              {"rss_after_bytes", after.resident_bytes},
                                              {"heap_in_use_bytes", after.in_use_bytes},
                                              {"heap_free_bytes_before", before.free_bytes},
                                              {"heap_free_bytes_after", after.free_bytes}});
#endif
}

}  // namespace tessera::services
