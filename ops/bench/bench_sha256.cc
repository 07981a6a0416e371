// bench_sha256: SHA-256 throughput of Tessera's implementation (core/util/sha256.h: SHA-NI where the CPU
// has it, else portable), of its portable compression function alone, and of an independent peer in the
// same run: Python's hashlib, i.e. OpenSSL's SHA-256 (its own assembly, with SHA-NI where available).
// Each hashes the same 256 MiB buffer (the peer: the same bytes written to a temporary file and read
// into memory before its clock starts), best of 3. Why it matters: registry blobs are verified on every
// load, and a server hashes its whole backbone at start-up.
//
// Usage: bench_sha256 [--python P] [--mb N]
// Last line: tessera_mb_s=<x> portable_mb_s=<x> openssl_mb_s=<x> ratio=<tessera / openssl>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/util/sha256.h"
#include "core/util/sha256_blocks.h"
#include "ops/bench/bench_clock.h"

namespace tessera {
namespace {

template <typename Fn>
double BestMbPerS(size_t bytes, Fn fn) {
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    const double t0 = bench::Now();
    fn();
    best = std::min(best, bench::Now() - t0);
  }
  return static_cast<double>(bytes) / best / 1e6;
}

// hashlib over the file's bytes (read before timing); 0 when python3 or hashlib is missing.
double OpenSslMbPerS(const std::string& python, const std::string& path, std::string* digest) {
  const std::string cmd = python +
                          " -c 'import hashlib,sys,time\n"
                          "d=open(sys.argv[1],\"rb\").read()\n"
                          "b=1e30\n"
                          "for _ in range(3):\n"
                          "  t=time.perf_counter(); h=hashlib.sha256(d).hexdigest(); b=min(b,time.perf_counter()-t)\n"
                          "print(len(d)/b/1e6, h)' " +
                          path + " 2>/dev/null";
  FILE* f = popen(cmd.c_str(), "r");
  if (f == nullptr) return 0.0;
  char line[256] = {0};
  double mb_s = 0.0;
  if (std::fgets(line, sizeof line, f) != nullptr) {
    char hex[80] = {0};
    if (std::sscanf(line, "%lf %79s", &mb_s, hex) == 2) *digest = hex;
  }
  pclose(f);
  return mb_s;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  using namespace tessera;
  std::string python = "python3";
  size_t mb = 256;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--python") && i + 1 < argc) python = argv[++i];
    else if (!std::strcmp(argv[i], "--mb") && i + 1 < argc) mb = std::strtoul(argv[++i], nullptr, 10);
    else {
      std::fprintf(stderr, "usage: bench_sha256 [--python P] [--mb N]\n");
      return 2;
    }
  }
  if (mb == 0) mb = 1;
  std::vector<uint8_t> data(mb << 20);
  uint32_t x = 12345;
  for (uint8_t& b : data) b = static_cast<uint8_t>((x = x * 1103515245u + 12345u) >> 24);
  const std::string_view view(reinterpret_cast<const char*>(data.data()), data.size());

  std::string digest;
  const double tessera_mb_s = BestMbPerS(data.size(), [&] { digest = Sha256Hex(view); });
  uint32_t state[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  const double portable_mb_s =
      BestMbPerS(data.size(), [&] { sha256_internal::BlocksPortable(state, data.data(), data.size() / 64); });
  uint32_t probe[8] = {0};
  const bool sha_ni = sha256_internal::BlocksShaNi(probe, data.data(), 1);

  char path[] = "/tmp/bench_sha256_XXXXXX";
  const int fd = mkstemp(path);
  double openssl_mb_s = 0.0;
  std::string peer_digest;
  if (fd >= 0) {
    const bool written = write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
    close(fd);
    if (written) openssl_mb_s = OpenSslMbPerS(python, path, &peer_digest);
    unlink(path);
  }
  std::printf("bench_sha256: %zu MiB, best of 3; SHA extensions on this CPU: %s\n", mb, sha_ni ? "yes" : "no");
  std::printf("  tessera (dispatch): %.0f MB/s   portable blocks: %.0f MB/s   openssl (python hashlib): %.0f MB/s\n",
              tessera_mb_s, portable_mb_s, openssl_mb_s);
  if (!peer_digest.empty()) {
    std::printf("  digests %s\n", peer_digest == digest ? "equal" : "DIFFER");
    if (peer_digest != digest) return 1;
  } else {
    std::printf("  peer unavailable (%s with hashlib not found)\n", python.c_str());
  }
  std::printf("tessera_mb_s=%.0f portable_mb_s=%.0f openssl_mb_s=%.0f ratio=%.3f\n", tessera_mb_s, portable_mb_s,
              openssl_mb_s, openssl_mb_s > 0 ? tessera_mb_s / openssl_mb_s : 0.0);
  return 0;
}
