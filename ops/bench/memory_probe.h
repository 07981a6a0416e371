// The machine's memory read bandwidth, as the CPU benches state it next to what decode reaches (issue 17:
// "the FLOP/s and bytes/s reached against the machine's measured peak").
//
// A read-only sweep over a 512 MiB buffer (far beyond any cache) split over the pool's threads (NumThreads),
// best of 3. Two sweeps, the larger counts: one with 8 independent 64-bit scalar accumulators and, where
// the CPU has AVX-512, one with 8 independent 512-bit accumulators. The vector one matters: GCC -O2 does not
// vectorize the scalar loop, and on the 2-core build machine it read 18 GB/s while the decode kernels
// streamed weights at 26-30 GB/s; a probe below what the kernels reach is no limit.
#pragma once

#include <immintrin.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/util/parallel.h"
#include "ops/bench/bench_clock.h"

namespace tessera::bench {

namespace memory_probe_internal {

inline uint64_t SumScalar(const uint64_t* p, int64_t words) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
  for (int64_t i = 0; i + 8 <= words; i += 8) {
    s0 += p[i]; s1 += p[i + 1]; s2 += p[i + 2]; s3 += p[i + 3];
    s4 += p[i + 4]; s5 += p[i + 5]; s6 += p[i + 6]; s7 += p[i + 7];
  }
  return s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
}

__attribute__((target("avx512f"))) inline uint64_t SumAvx512(const uint64_t* p, int64_t words) {
  __m512i a[8];
  for (auto& v : a) v = _mm512_setzero_si512();
  for (int64_t i = 0; i + 64 <= words; i += 64) {
    for (int j = 0; j < 8; ++j) a[j] = _mm512_add_epi64(a[j], _mm512_loadu_si512(p + i + 8 * j));
  }
  __m512i s = a[0];
  for (int j = 1; j < 8; ++j) s = _mm512_add_epi64(s, a[j]);
  uint64_t lanes[8];
  _mm512_storeu_si512(lanes, s);
  uint64_t sum = 0;
  for (uint64_t v : lanes) sum += v;
  return sum;
}

}  // namespace memory_probe_internal

// GB/s (1e9 bytes per second).
inline double MemoryReadGbps() {
  using namespace memory_probe_internal;
  const int64_t words = (512ll << 20) / 8, chunks = 1024, per_chunk = words / chunks;
  std::vector<uint64_t> buf(words);
  ParallelFor(words, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) buf[i] = static_cast<uint64_t>(i);
  });
  const bool avx512 = __builtin_cpu_supports("avx512f");
  double best = 1e30;
  volatile uint64_t sink = 0;
  for (int vector = 0; vector <= (avx512 ? 1 : 0); ++vector) {
    for (int r = 0; r < 3; ++r) {
      std::vector<uint64_t> partial(chunks, 0);
      const double t0 = Now();
      ParallelFor(chunks, 1, [&](int64_t b, int64_t e) {
        for (int64_t c = b; c < e; ++c) {
          const uint64_t* p = buf.data() + c * per_chunk;
          partial[c] = vector ? SumAvx512(p, per_chunk) : SumScalar(p, per_chunk);
        }
      });
      best = std::min(best, Now() - t0);
      for (uint64_t v : partial) sink = sink + v;
    }
  }
  return static_cast<double>(words * 8) / best / 1e9;
}

// MemoryReadGbps in a child process, so that its 512 MiB buffer stays out of the caller's peak RSS (a bench
// that reports its own memory). Call it before the caller's thread pool starts (fork keeps only the calling
// thread); 0 when the child fails.
inline double MemoryReadGbpsInChild() {
  int fd[2];
  if (pipe(fd) != 0) return 0.0;
  const pid_t pid = fork();
  if (pid < 0) return 0.0;
  if (pid == 0) {
    close(fd[0]);
    const double gbps = MemoryReadGbps();
    const ssize_t w = write(fd[1], &gbps, sizeof gbps);
    _exit(w == sizeof gbps ? 0 : 1);
  }
  close(fd[1]);
  double gbps = 0.0;
  if (read(fd[0], &gbps, sizeof gbps) != sizeof gbps) gbps = 0.0;
  close(fd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return gbps;
}

}  // namespace tessera::bench
