// See host_buffer_pool.h.
#include "core/backend/cpu/host_buffer_pool.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

namespace tessera::cpu {

size_t HostBufferPool::Rounded(size_t bytes) {
  // Size classes four to a doubling (2^k * {1, 1.25, 1.5, 1.75}): a step's MoE tensors follow the routed
  // token counts, which change every step; by class they reuse the same buffers. At most 25% of a
  // buffer is slack, and pages never written are never faulted in.
  static const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  size_t size = std::max<size_t>(bytes, 1);
  size_t top = size_t{1} << (63 - __builtin_clzll(size));  // largest power of two <= size
  if (top >= 4 * page) {
    const size_t step = top / 4;
    size = (size + step - 1) / step * step;
  }
  return (size + page - 1) / page * page;
}

HostBufferPool::~HostBufferPool() { Close(); }

void* HostBufferPool::Allocate(size_t bytes) {
  const size_t size = Rounded(bytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!closed_) {
      if (auto it = kept_.find(size); it != kept_.end()) {
        void* p = it->second;
        kept_.erase(it);
        kept_bytes_ -= size;
        in_use_ += size;
        peak_ = std::max(peak_, in_use_);
        ++reuses_;
        return p;
      }
      // A new mapping: keep what is mapped within kMaxMappedPerPeak x the peak in use (the new peak if
      // this raises it).
      peak_ = std::max(peak_, in_use_ + size);
      UnmapKeptLocked(kMaxMappedPerPeak * peak_ - size);
    }
    in_use_ += size;
    ++maps_;
  }
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::lock_guard<std::mutex> lock(mu_);
    in_use_ -= size;
    return nullptr;
  }
  return p;
}

void HostBufferPool::Release(void* p, size_t bytes) {
  if (p == nullptr) return;
  const size_t size = Rounded(bytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    in_use_ -= size;
    if (!closed_) {
      kept_.emplace(size, p);
      kept_bytes_ += size;
      return;
    }
  }
  ::munmap(p, size);
}

void HostBufferPool::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
  UnmapKeptLocked(0);
}

void HostBufferPool::UnmapKeptLocked(size_t until_mapped) {
  // Largest first: the fewest munmaps for the bytes.
  while (!kept_.empty() && in_use_ + kept_bytes_ > until_mapped) {
    auto last = std::prev(kept_.end());
    ::munmap(last->second, last->first);
    kept_bytes_ -= last->first;
    kept_.erase(last);
  }
}

HostBufferPool::Stats HostBufferPool::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {static_cast<int64_t>(in_use_), static_cast<int64_t>(kept_bytes_), static_cast<int64_t>(peak_), maps_,
          reuses_};
}

}  // namespace tessera::cpu
