// The CPU benches' clock and memory readings: wall seconds on the steady clock, and this process's peak
// resident set (getrusage's ru_maxrss, which Linux reports in KiB).
#pragma once

#include <sys/resource.h>

#include <chrono>

namespace tessera::bench {

inline double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline double PeakRssMb() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

}  // namespace tessera::bench
