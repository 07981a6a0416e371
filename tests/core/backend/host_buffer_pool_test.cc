// HostBufferPool (core/backend/cpu/host_buffer_pool.h): size classes, reuse by class, the bound on what
// it keeps, Close; and a CPU backend with pool_host_buffers: large tensors come from the pool and are
// reused step after step, small ones stay with malloc, and tensors outliving the backend stay valid.
#include "core/backend/cpu/host_buffer_pool.h"

#include <unistd.h>

#include <cstring>

#include "core/backend/backend.h"
#include "gtest/gtest.h"

namespace tessera::cpu {
namespace {

const size_t kPage = static_cast<size_t>(::sysconf(_SC_PAGESIZE));

TEST(HostBufferPoolTest, SizeClassesAreWholePagesAtMostAQuarterAbove) {
  EXPECT_EQ(HostBufferPool::Rounded(1), kPage);
  EXPECT_EQ(HostBufferPool::Rounded(kPage + 1), 2 * kPage);
  const size_t mib = size_t{1} << 20;
  EXPECT_EQ(HostBufferPool::Rounded(mib), mib);
  EXPECT_EQ(HostBufferPool::Rounded(mib + 1), mib + mib / 4);
  EXPECT_EQ(HostBufferPool::Rounded(mib + mib / 4 + 1), mib + mib / 2);
  for (size_t bytes = 100000; bytes < (size_t{64} << 20); bytes = bytes * 9 / 7) {
    const size_t r = HostBufferPool::Rounded(bytes);
    EXPECT_GE(r, bytes);
    EXPECT_LE(r, bytes + bytes / 4 + kPage) << bytes;
    EXPECT_EQ(r % kPage, 0u);
  }
}

TEST(HostBufferPoolTest, ReleasedBuffersAreReusedByClass) {
  HostBufferPool pool;
  void* a = pool.Allocate(300000);
  ASSERT_NE(a, nullptr);
  std::memset(a, 7, 300000);  // writable
  pool.Release(a, 300000);
  EXPECT_EQ(pool.stats().kept_bytes, static_cast<int64_t>(HostBufferPool::Rounded(300000)));
  void* b = pool.Allocate(290000);  // same class
  EXPECT_EQ(b, a);
  EXPECT_EQ(pool.stats().reuses, 1);
  EXPECT_EQ(pool.stats().maps, 1);
  pool.Release(b, 290000);
  // A "step" repeated: after the first, nothing new is mapped.
  for (int step = 0; step < 5; ++step) {
    void* x = pool.Allocate(1 << 20);
    void* y = pool.Allocate(200000);
    void* z = pool.Allocate(3 << 20);
    ASSERT_TRUE(x && y && z);
    pool.Release(y, 200000);
    pool.Release(x, 1 << 20);
    pool.Release(z, 3 << 20);
  }
  EXPECT_EQ(pool.stats().maps, 4);  // a, and x, y, z once
  EXPECT_EQ(pool.stats().in_use_bytes, 0);
}

TEST(HostBufferPoolTest, KeepsAtMostTwiceThePeakInUse) {
  HostBufferPool pool;
  // One at a time, each a new class: the peak in use is one buffer, so at most two are ever mapped.
  size_t largest = 0;
  for (size_t bytes = 200000; bytes < (size_t{16} << 20); bytes = bytes * 3 / 2) {
    void* p = pool.Allocate(bytes);
    ASSERT_NE(p, nullptr);
    largest = HostBufferPool::Rounded(bytes);
    const HostBufferPool::Stats s = pool.stats();
    EXPECT_LE(s.in_use_bytes + s.kept_bytes, 2 * s.peak_in_use_bytes);
    pool.Release(p, bytes);
  }
  EXPECT_EQ(pool.stats().peak_in_use_bytes, static_cast<int64_t>(largest));
  pool.Close();
  EXPECT_EQ(pool.stats().kept_bytes, 0);
  // After Close a release unmaps at once.
  void* p = pool.Allocate(500000);
  ASSERT_NE(p, nullptr);
  pool.Release(p, 500000);
  EXPECT_EQ(pool.stats().kept_bytes, 0);
  EXPECT_EQ(pool.stats().in_use_bytes, 0);
}

TEST(HostBufferPoolTest, PooledCpuBackendReusesLargeTensorsAndOutlivesTheBackend) {
  BackendOptions options;
  options.pool_host_buffers = true;
  std::unique_ptr<Backend> be = MakeCpuBackend(options);
  const void* first = nullptr;
  for (int step = 0; step < 3; ++step) {
    absl::StatusOr<Tensor> big = be->Alloc({256, 1024}, DType::kF32);  // 1 MiB
    ASSERT_TRUE(big.ok()) << big.status();
    ASSERT_TRUE(be->Fill(*big, 1.5f).ok());
    if (step == 0) first = big->raw();
    EXPECT_EQ(big->raw(), first) << "step " << step << " mapped a new buffer";
    EXPECT_EQ(reinterpret_cast<uintptr_t>(big->raw()) % kPage, 0u);
  }
  absl::StatusOr<Tensor> kept = be->Alloc({64, 1024}, DType::kF32);  // 256 KiB, alive after the backend
  ASSERT_TRUE(kept.ok());
  ASSERT_TRUE(be->Fill(*kept, 2.0f).ok());
  absl::StatusOr<Tensor> small = be->Alloc({16}, DType::kF32);  // malloc
  ASSERT_TRUE(small.ok());
  be.reset();
  EXPECT_EQ(kept->data<float>()[64 * 1024 - 1], 2.0f);
  kept->data<float>()[0] = 3.0f;
  *kept = Tensor();  // freed after the backend: unmapped, no crash
}

}  // namespace
}  // namespace tessera::cpu
