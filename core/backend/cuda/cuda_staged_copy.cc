#include "core/backend/cuda/cuda_staged_copy.h"

#include <algorithm>
#include <cstring>

#include "core/backend/cuda/cuda_backend_internal.h"
#include "core/util/status_macros.h"

namespace tessera::cuda {

absl::Status StagedCopier::Init() {
  RETURN_IF_ERROR(CudaStatus(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking), "StagedCopier: cudaStreamCreate"));
  for (int b = 0; b < kBuffers; ++b) {
    RETURN_IF_ERROR(CudaStatus(cudaMallocHost(&pinned_[b], kChunkBytes), "StagedCopier: cudaMallocHost"));
    RETURN_IF_ERROR(CudaStatus(cudaEventCreateWithFlags(&reusable_[b], cudaEventDisableTiming), "cudaEventCreate"));
  }
  RETURN_IF_ERROR(CudaStatus(cudaEventCreateWithFlags(&compute_point_, cudaEventDisableTiming), "cudaEventCreate"));
  return CudaStatus(cudaEventCreateWithFlags(&copied_, cudaEventDisableTiming), "cudaEventCreate");
}

StagedCopier::~StagedCopier() {
  if (copy_ != nullptr) cudaStreamSynchronize(copy_);
  for (int b = 0; b < kBuffers; ++b) {
    if (pinned_[b] != nullptr) cudaFreeHost(pinned_[b]);
    if (reusable_[b] != nullptr) cudaEventDestroy(reusable_[b]);
  }
  if (compute_point_ != nullptr) cudaEventDestroy(compute_point_);
  if (copied_ != nullptr) cudaEventDestroy(copied_);
  if (copy_ != nullptr) cudaStreamDestroy(copy_);
}

absl::Status StagedCopier::Copy(void* dev, const void* host, size_t nbytes) {
  RETURN_IF_ERROR(CudaStatus(cudaEventRecord(compute_point_, compute_), "StagedCopier: cudaEventRecord"));
  RETURN_IF_ERROR(CudaStatus(cudaStreamWaitEvent(copy_, compute_point_, 0), "StagedCopier: cudaStreamWaitEvent"));
  const char* src = static_cast<const char*>(host);
  char* dst = static_cast<char*>(dev);
  for (size_t off = 0; off < nbytes; off += kChunkBytes) {
    const size_t len = std::min(kChunkBytes, nbytes - off);
    const int b = next_;
    next_ = (next_ + 1) % kBuffers;
    // Buffer b is free once the DMA that last read it has run (a never-recorded event is complete).
    RETURN_IF_ERROR(CudaStatus(cudaEventSynchronize(reusable_[b]), "StagedCopier: waiting for a staging buffer"));
    std::memcpy(pinned_[b], src + off, len);
    RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(dst + off, pinned_[b], len, cudaMemcpyHostToDevice, copy_),
                               "StagedCopier: cudaMemcpyAsync"));
    RETURN_IF_ERROR(CudaStatus(cudaEventRecord(reusable_[b], copy_), "StagedCopier: cudaEventRecord"));
  }
  RETURN_IF_ERROR(CudaStatus(cudaEventRecord(copied_, copy_), "StagedCopier: cudaEventRecord"));
  return CudaStatus(cudaStreamWaitEvent(compute_, copied_, 0), "StagedCopier: cudaStreamWaitEvent");
}

}  // namespace tessera::cuda
