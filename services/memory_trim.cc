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

void ReleaseFreeMemory() {
#if defined(__GLIBC__)
  const long long before = ResidentBytes();
  malloc_trim(0);
  const long long after = ResidentBytes();
  LogInfo("released free memory to the OS", {{"rss_before_bytes", before}, {"rss_after_bytes", after}});
#endif
}

}  // namespace tessera::services
