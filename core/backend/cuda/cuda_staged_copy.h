// Host-to-device copies of large pageable buffers (overlay weights, checkpoints) through pinned staging
// buffers on a copy stream of their own.
//
// Why: cudaMemcpyAsync from pageable memory first waits on the host for everything already queued on
// the stream, then copies through the driver's staging synchronously. A tenant's overlay load on the
// compute stream therefore waited for the serving kernels in flight and then sat in that stream's queue.
// Here the host only memcpys into pinned memory (chunk i+1 while the DMA of chunk i runs) and the copy
// engine does the rest on `copy_`; the compute stream is made to wait (on the device, with an event) only
// where later kernels read the data.
//
// Ordering contract: the copy stream first waits for the compute stream's work queued before the call
// (the destination may be memory the stream-ordered pool just recycled); kernels queued on the compute
// stream after the call see the data. The call returns once `host` has been read (the caller may reuse
// it) — before the last DMA finishes. Not thread-safe (like the backend that owns it).
#pragma once

#include <array>
#include <cstddef>

#include <cuda_runtime.h>

#include "absl/status/status.h"

namespace tessera::cuda {

class StagedCopier {
 public:
  static constexpr size_t kChunkBytes = size_t{4} << 20;  // per pinned buffer
  static constexpr size_t kMinBytes = size_t{1} << 20;    // smaller copies are not worth staging
  static constexpr int kBuffers = 2;

  explicit StagedCopier(cudaStream_t compute) : compute_(compute) {}
  ~StagedCopier();
  StagedCopier(const StagedCopier&) = delete;
  StagedCopier& operator=(const StagedCopier&) = delete;

  absl::Status Init();
  absl::Status Copy(void* dev, const void* host, size_t nbytes);

 private:
  cudaStream_t compute_;
  cudaStream_t copy_ = nullptr;
  std::array<void*, kBuffers> pinned_{};
  std::array<cudaEvent_t, kBuffers> reusable_{};  // recorded on copy_ after the DMA out of buffer b
  cudaEvent_t compute_point_ = nullptr;            // compute stream -> copy stream
  cudaEvent_t copied_ = nullptr;                   // copy stream -> compute stream
  int next_ = 0;
};

}  // namespace tessera::cuda
