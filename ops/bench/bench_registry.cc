// bench_registry: latency and throughput of the registry's hot operations on a fresh temp data dir.
//
//   bench_registry [--dir DIR] [--n N]
//
// Measures publish-version (64 KiB blob put + row, each fsync'ed), publish row only, promote, rollback,
// get-live (single thread and 4 threads), and enqueue+claim (CreateJob + ClaimNextJob), plus the raw
// fdatasync latency of the file system (promote/rollback commit with synchronous=FULL, so one
// fdatasync is their floor: compare against it when the disk is slow). Prints ops/s,
// p50 and p99 per operation; the last line is exactly
//   publish_p50_ms=<x> promote_p50_ms=<x> rollback_p50_ms=<x> get_live_per_s=<x>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "storage/registry.h"

namespace {

using tessera::storage::NewDataset;
using tessera::storage::NewJob;
using tessera::storage::NewVersion;
using tessera::storage::Registry;
using Clock = std::chrono::steady_clock;

struct Stats {
  double ops_per_s = 0;
  double p50_ms = 0;
  double p99_ms = 0;
};

[[noreturn]] void Die(const std::string& what, const absl::Status& s) {
  std::fprintf(stderr, "bench_registry: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

// Times `op(i)` for i in [0, n); each call must succeed.
Stats Measure(const char* name, int n, const std::function<absl::Status(int)>& op) {
  std::vector<double> ms;
  ms.reserve(n);
  const auto start = Clock::now();
  for (int i = 0; i < n; ++i) {
    const auto t0 = Clock::now();
    absl::Status s = op(i);
    const auto t1 = Clock::now();
    if (!s.ok()) Die(name, s);
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  const double total_s = std::chrono::duration<double>(Clock::now() - start).count();
  std::sort(ms.begin(), ms.end());
  Stats st;
  st.ops_per_s = n / total_s;
  st.p50_ms = ms[ms.size() / 2];
  st.p99_ms = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
  std::printf("%-26s n=%-6d ops/s=%-10.1f p50_ms=%-8.3f p99_ms=%.3f\n", name, n, st.ops_per_s,
              st.p50_ms, st.p99_ms);
  return st;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  int n = 300;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
      dir = argv[++i];
    } else if (std::strcmp(argv[i], "--n") == 0 && i + 1 < argc) {
      n = std::max(10, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: bench_registry [--dir DIR] [--n N]\n");
      return 2;
    }
  }
  bool remove_dir = false;
  if (dir.empty()) {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr && *base ? base : "/tmp") + "/bench_registry_XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::perror("mkdtemp");
      return 1;
    }
    dir = tmpl;
    remove_dir = true;
  }
  std::printf("bench_registry: data dir %s\n", dir.c_str());
  {
    // The floor for any durable commit: one fdatasync of a small write on the same file system.
    const std::string probe = dir + "/fsync_probe";
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
      std::vector<double> ms;
      char page[4096] = {};
      for (int i = 0; i < 100; ++i) {
        if (::write(fd, page, sizeof(page)) != static_cast<ssize_t>(sizeof(page))) break;
        const auto t0 = Clock::now();
        ::fdatasync(fd);
        ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      }
      ::close(fd);
      ::unlink(probe.c_str());
      if (!ms.empty()) {
        std::sort(ms.begin(), ms.end());
        std::printf("%-26s n=%-6zu p50_ms=%-8.3f p99_ms=%.3f  (hardware floor of a durable commit)\n",
                    "fdatasync(4 KiB)", ms.size(), ms[ms.size() / 2], ms[ms.size() * 99 / 100]);
      }
    }
  }
  auto opened = Registry::Open(dir);
  if (!opened.ok()) Die("open", opened.status());
  Registry& reg = **opened;
  if (auto t = reg.CreateTenant("bench", "Bench", "bench"); !t.ok()) Die("tenant", t.status());
  if (auto t = reg.CreateTenant("other", "Other", "bench"); !t.ok()) Die("tenant", t.status());

  std::string weights(64 * 1024, '\0');
  const Stats publish = Measure("publish_version(blob+row)", n, [&](int i) -> absl::Status {
    std::memcpy(weights.data(), &i, sizeof(i));  // distinct content each time
    auto digest = reg.blobs().Put(weights);
    if (!digest.ok()) return digest.status();
    NewVersion v;
    v.tenant_id = "bench";
    v.parent_version = i;
    v.slots_json = "[[0,1]]";
    v.val_loss = 1.0;
    v.blob_digest = *digest;
    return reg.PublishVersion(v, "bench").status();
  });
  const std::string shared_blob = reg.blobs().Put("shared weights").value();
  Measure("publish_version(row only)", n, [&](int) -> absl::Status {
    NewVersion v;
    v.tenant_id = "other";
    v.blob_digest = shared_blob;
    return reg.PublishVersion(v, "bench").status();
  });
  const Stats promote = Measure("promote", n, [&](int i) -> absl::Status {
    return reg.Promote("bench", 1 + (i % n), "bench").status();
  });
  // Each rollback undoes one promote made just before it (untimed), so the history never runs out.
  Stats rollback;
  {
    std::vector<double> ms;
    double total_s = 0;
    for (int i = 0; i < n; ++i) {
      if (auto p = reg.Promote("bench", 1 + (i % 2), "bench"); !p.ok()) Die("promote", p.status());
      const auto t0 = Clock::now();
      if (auto r = reg.Rollback("bench", std::nullopt, "bench"); !r.ok()) Die("rollback", r.status());
      const auto t1 = Clock::now();
      ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      total_s += std::chrono::duration<double>(t1 - t0).count();
    }
    std::sort(ms.begin(), ms.end());
    rollback.ops_per_s = n / total_s;
    rollback.p50_ms = ms[ms.size() / 2];
    rollback.p99_ms = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
    std::printf("%-26s n=%-6d ops/s=%-10.1f p50_ms=%-8.3f p99_ms=%.3f\n", "rollback", n,
                rollback.ops_per_s, rollback.p50_ms, rollback.p99_ms);
  }

  const int live_n = 20000;
  const Stats get_live = Measure("get_live", live_n, [&](int) -> absl::Status {
    return reg.GetLive("bench").status();
  });
  {
    constexpr int kThreads = 4;
    std::atomic<int64_t> total{0};
    std::vector<std::thread> threads;
    const auto start = Clock::now();
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        int64_t done = 0;
        while (Clock::now() - start < std::chrono::seconds(1)) {
          if (!reg.GetLive("bench").ok()) std::abort();
          ++done;
        }
        total += done;
      });
    }
    for (auto& th : threads) th.join();
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("%-26s threads=%d ops/s=%.1f\n", "get_live(parallel)", kThreads, total / s);
  }

  auto ds_blob = reg.blobs().Put("{\"text\": \"bench\"}\n");
  if (!ds_blob.ok()) Die("dataset blob", ds_blob.status());
  auto ds = reg.CreateDataset(NewDataset{"bench", "bench", "jsonl", *ds_blob, 1, 3}, "bench");
  if (!ds.ok()) Die("dataset", ds.status());
  Measure("enqueue+claim", n, [&](int) -> absl::Status {
    auto job = reg.CreateJob(NewJob{"bench", "{}", ds->dataset_id, "", "", 10}, "bench");
    if (!job.ok()) return job.status();
    auto claimed = reg.ClaimNextJob("bench-worker", absl::Minutes(5));
    if (!claimed.ok()) return claimed.status();
    if (!claimed->has_value()) return absl::InternalError("queue unexpectedly empty");
    return absl::OkStatus();
  });

  opened->reset();
  if (remove_dir) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  std::printf("publish_p50_ms=%.3f promote_p50_ms=%.3f rollback_p50_ms=%.3f get_live_per_s=%.0f\n",
              publish.p50_ms, promote.p50_ms, rollback.p50_ms, get_live.ops_per_s);
  return 0;
}
