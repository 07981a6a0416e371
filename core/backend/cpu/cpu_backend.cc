// CPU backend: the factory and the memory ops.
//
// Memory contract: Alloc returns 64-byte aligned host memory (cache-line and AVX-512 aligned), rounded
// up to a multiple of 64 bytes and at least 64 bytes, owned by the Tensor's shared_ptr (freed with the
// last view). Contents are uninitialized. Fill/Copy/CopyFromHost/CopyToHost handle every dtype (f32,
// bf16, f16 storage, i32); Copy converts between float dtypes only. Nothing here is asynchronous, so
// Synchronize is a no-op.
#include <cstdlib>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/backend/cpu/cpu_backend_internal.h"
#include "core/backend/cpu/cpu_blas.h"
#include "core/backend/cpu/cpu_narrow_storage.h"
#include "core/backend/cpu/cpu_check.h"
#include "core/util/parallel.h"
#include "core/util/status_macros.h"

namespace tessera {
namespace cpu {
namespace {

constexpr size_t kAlignment = 64;

bool IsFloat(DType d) { return d != DType::kI32; }

// Reads element i of a float tensor of any float dtype as f32.
inline float LoadFloat(const void* p, DType d, int64_t i) {
  switch (d) {
    case DType::kF32: return static_cast<const float*>(p)[i];
    case DType::kBF16: return Bf16ToF32(static_cast<const uint16_t*>(p)[i]);
    case DType::kF16: return F16ToF32(static_cast<const uint16_t*>(p)[i]);
    case DType::kI32: break;
  }
  return 0.0f;
}

inline void StoreFloat(void* p, DType d, int64_t i, float v) {
  switch (d) {
    case DType::kF32: static_cast<float*>(p)[i] = v; break;
    case DType::kBF16: static_cast<uint16_t*>(p)[i] = F32ToBf16(v); break;
    case DType::kF16: static_cast<uint16_t*>(p)[i] = F32ToF16(v); break;
    case DType::kI32: break;
  }
}

absl::Status CheckAnyCpu(absl::string_view op, absl::string_view arg, const Tensor& t) {
  return CheckTensor(op, arg, t, t.dtype());  // device, definedness and shape only
}

// dst[i] = Convert(src[i]) for i in [0, n), as a typed loop the compiler vectorizes.
template <typename From, typename To, To (*Convert)(From)>
void ConvertElements(const void* src, void* dst, int64_t n) {
  const From* ps = static_cast<const From*>(src);
  To* pd = static_cast<To*>(dst);
  ParallelFor(n, 1 << 15, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) pd[i] = Convert(ps[i]);
  });
}

}  // namespace

CpuBackend::CpuBackend(const BackendOptions& options) {
  (void)Blas();  // load the BLAS with its core type now, before the caller starts threads (cpu_blas.h)
  if (options.memory_limit_bytes > 0) budget_ = std::make_shared<MemoryBudget>(options.memory_limit_bytes);
  if (options.pool_host_buffers) pool_ = std::make_shared<HostBufferPool>();
  paged_kv_ = options.paged_kv_attention;
}

CpuBackend::~CpuBackend() {
  if (pool_) pool_->Close();  // tensors still alive unmap their buffers when they are freed
}

absl::StatusOr<Tensor> CpuBackend::Alloc(std::vector<int64_t> shape, DType dtype) {
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) return absl::InvalidArgumentError(absl::StrCat("Alloc: negative shape ", ShapeString(shape)));
    if (d > 0 && numel > std::numeric_limits<int64_t>::max() / 8 / d) {
      return absl::InvalidArgumentError(absl::StrCat("Alloc: shape ", ShapeString(shape), " is too large"));
    }
    numel *= d;
  }
  size_t bytes = static_cast<size_t>(numel) * DTypeSize(dtype);
  bytes = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (bytes == 0) bytes = kAlignment;
  ASSIGN_OR_RETURN(std::shared_ptr<void> lease,
                   MemoryBudget::Lease(budget_, static_cast<int64_t>(bytes), absl::StrCat("Alloc ", ShapeString(shape))));
  if (pool_ && bytes >= HostBufferPool::kMinBytes) {
    void* p = pool_->Allocate(bytes);
    if (p == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("Alloc: out of host memory mapping ", bytes, " bytes for ", ShapeString(shape)));
    }
    std::shared_ptr<void> owner(p, [pool = pool_, bytes, lease = std::move(lease)](void* q) { pool->Release(q, bytes); });
    return Tensor(std::move(owner), p, std::move(shape), dtype, DeviceKind::kCpu);
  }
  void* p = std::aligned_alloc(kAlignment, bytes);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("Alloc: out of host memory allocating ", bytes, " bytes for ", ShapeString(shape)));
  }
  std::shared_ptr<void> owner(p, [lease = std::move(lease)](void* q) { std::free(q); });
  return Tensor(std::move(owner), p, std::move(shape), dtype, DeviceKind::kCpu);
}

absl::Status CpuBackend::Fill(Tensor& t, float value) {
  RETURN_IF_ERROR(CheckAnyCpu("Fill", "t", t));
  const int64_t n = t.numel();
  switch (t.dtype()) {
    case DType::kF32: {
      float* p = t.data<float>();
      ParallelFor(n, 1 << 16, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) p[i] = value;
      });
      break;
    }
    case DType::kI32: {
      int32_t* p = t.data<int32_t>();
      const int32_t iv = static_cast<int32_t>(value);
      for (int64_t i = 0; i < n; ++i) p[i] = iv;
      break;
    }
    case DType::kBF16:
    case DType::kF16: {
      const uint16_t hv = t.dtype() == DType::kBF16 ? F32ToBf16(value) : F32ToF16(value);
      uint16_t* p = t.data<uint16_t>();
      for (int64_t i = 0; i < n; ++i) p[i] = hv;
      break;
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyFromHost(const void* src, size_t nbytes, Tensor& dst) {
  RETURN_IF_ERROR(CheckAnyCpu("CopyFromHost", "dst", dst));
  if (nbytes != dst.nbytes()) {
    return absl::InvalidArgumentError(absl::StrCat("CopyFromHost: nbytes is ", nbytes, ", expected ",
                                                   dst.nbytes(), " for dst ", dst.DebugString()));
  }
  if (nbytes > 0 && src == nullptr) return absl::InvalidArgumentError("CopyFromHost: src is null");
  if (nbytes > 0) std::memmove(dst.raw(), src, nbytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyToHost(const Tensor& src, void* dst, size_t nbytes) {
  RETURN_IF_ERROR(CheckAnyCpu("CopyToHost", "src", src));
  if (nbytes != src.nbytes()) {
    return absl::InvalidArgumentError(absl::StrCat("CopyToHost: nbytes is ", nbytes, ", expected ",
                                                   src.nbytes(), " for src ", src.DebugString()));
  }
  if (nbytes > 0 && dst == nullptr) return absl::InvalidArgumentError("CopyToHost: dst is null");
  if (nbytes > 0) std::memmove(dst, src.raw(), nbytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::Copy(const Tensor& src, Tensor& dst) {
  RETURN_IF_ERROR(CheckAnyCpu("Copy", "src", src));
  RETURN_IF_ERROR(CheckAnyCpu("Copy", "dst", dst));
  RETURN_IF_ERROR(CheckNumel("Copy", "dst", dst, src.numel()));
  if (src.dtype() == dst.dtype()) {
    if (src.nbytes() > 0) std::memmove(dst.raw(), src.raw(), src.nbytes());
    return absl::OkStatus();
  }
  if (!IsFloat(src.dtype()) || !IsFloat(dst.dtype())) {
    return absl::InvalidArgumentError(absl::StrCat("Copy: cannot convert src ", DTypeName(src.dtype()),
                                                   " to dst ", DTypeName(dst.dtype()),
                                                   " (only float dtypes convert)"));
  }
  if (Overlaps(src, dst)) {
    return absl::InvalidArgumentError("Copy: converting src and dst must not overlap");
  }
  const void* s = src.raw();
  void* d = dst.raw();
  const DType sd = src.dtype(), dd = dst.dtype();
  // bf16 <-> f32 (NarrowStorageBackend's staging, every op of a bf16 model) as typed loops the compiler
  // vectorizes; the other pairs through the per-element dtype switch.
  if (sd == DType::kBF16 && dd == DType::kF32) {
    ConvertElements<uint16_t, float, Bf16ToF32>(s, d, src.numel());
    return absl::OkStatus();
  }
  if (sd == DType::kF32 && dd == DType::kBF16) {
    ConvertElements<float, uint16_t, F32ToBf16>(s, d, src.numel());
    return absl::OkStatus();
  }
  ParallelFor(src.numel(), 1 << 15, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) StoreFloat(d, dd, i, LoadFloat(s, sd, i));
  });
  return absl::OkStatus();
}

}  // namespace cpu

// The f32 kernels behind the narrow-storage stage (cpu_narrow_storage.h): bf16/f16 tensors work on every op.
std::unique_ptr<Backend> MakeCpuBackend(const BackendOptions& options) {
  return std::make_unique<cpu::NarrowStorageBackend>(std::make_unique<cpu::CpuBackend>(options));
}

}  // namespace tessera
