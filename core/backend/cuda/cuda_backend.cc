// The CUDA backend's factory, memory, synchronization and error reporting (ops live in cuda_ops.cc and
// cuda_matmul.cc; kernels in the .cu files). See cuda_backend_internal.h for the device model.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/backend/cuda/cuda_backend_internal.h"
#include "core/backend/cuda/cuda_kernels.h"
#include "core/util/status_macros.h"

namespace tessera {
namespace cuda {

absl::Status CudaStatus(cudaError_t e, absl::string_view what) {
  if (e == cudaSuccess) return absl::OkStatus();
  // Clear the runtime's last-error slot so a non-sticky failure (e.g. one failed allocation) is not
  // reported again by the next kernel launch's cudaGetLastError().
  cudaGetLastError();
  const std::string msg = absl::StrCat(what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
  if (e == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

absl::Status CublasStatus(cublasStatus_t s, absl::string_view what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  cudaGetLastError();  // as in CudaStatus
  const std::string msg = absl::StrCat(what, ": ", cublasGetStatusName(s), " (", cublasGetStatusString(s), ")");
  if (s == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(msg);
  if (s == CUBLAS_STATUS_INVALID_VALUE || s == CUBLAS_STATUS_NOT_SUPPORTED) return absl::InvalidArgumentError(msg);
  return absl::InternalError(msg);
}

DeviceContext::~DeviceContext() {
  if (stream != nullptr) {
    cudaSetDevice(ordinal);
    cudaStreamSynchronize(stream);
    cudaStreamDestroy(stream);
  }
}

// ---- UploadRing -------------------------------------------------------------------------------------

absl::Status UploadRing::Init() {
  for (Slot& s : slots_) {
    RETURN_IF_ERROR(CudaStatus(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming), "cudaEventCreate"));
  }
  return absl::OkStatus();
}

UploadRing::~UploadRing() {
  for (Slot& s : slots_) {
    if (s.done != nullptr) {
      cudaEventSynchronize(s.done);
      cudaEventDestroy(s.done);
    }
    if (s.host != nullptr) cudaFreeHost(s.host);
    if (s.dev != nullptr) cudaFreeAsync(s.dev, stream_);
  }
}

absl::StatusOr<void*> UploadRing::Upload(const void* host, size_t bytes) {
  Slot& s = slots_[next_];
  next_ = (next_ + 1) % kSlots;
  // The staging buffer is free once the copy that last read it has run.
  RETURN_IF_ERROR(CudaStatus(cudaEventSynchronize(s.done), "UploadRing: waiting for a staging slot"));
  if (bytes > s.cap) {
    size_t cap = s.cap == 0 ? 4096 : s.cap;
    while (cap < bytes) cap *= 2;
    if (s.host != nullptr) RETURN_IF_ERROR(CudaStatus(cudaFreeHost(s.host), "cudaFreeHost"));
    s.host = nullptr;
    // Stream-ordered: kernels already queued that read the old device buffer finish first.
    if (s.dev != nullptr) RETURN_IF_ERROR(CudaStatus(cudaFreeAsync(s.dev, stream_), "cudaFreeAsync"));
    s.dev = nullptr;
    s.cap = 0;
    RETURN_IF_ERROR(CudaStatus(cudaMallocHost(&s.host, cap), "UploadRing: cudaMallocHost"));
    RETURN_IF_ERROR(CudaStatus(cudaMallocAsync(&s.dev, cap, stream_), "UploadRing: cudaMallocAsync"));
    s.cap = cap;
  }
  if (bytes == 0) return s.dev;
  std::memcpy(s.host, host, bytes);
  RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(s.dev, s.host, bytes, cudaMemcpyHostToDevice, stream_),
                             "UploadRing: cudaMemcpyAsync"));
  RETURN_IF_ERROR(CudaStatus(cudaEventRecord(s.done, stream_), "UploadRing: cudaEventRecord"));
  return s.dev;
}

// ---- Argument checks --------------------------------------------------------------------------------

absl::Status CheckOnDevice(const Tensor& t, absl::string_view op, absl::string_view arg) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, " is undefined"));
  if (t.device() != DeviceKind::kCuda) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, " is not on the CUDA device: ", t.DebugString()));
  }
  return absl::OkStatus();
}

absl::Status CheckFloat(const Tensor& t, absl::string_view op, absl::string_view arg) {
  RETURN_IF_ERROR(CheckOnDevice(t, op, arg));
  if (t.dtype() == DType::kI32) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, " must be a float tensor, got ", t.DebugString()));
  }
  return absl::OkStatus();
}

absl::Status CheckF32(const Tensor& t, absl::string_view op, absl::string_view arg) {
  RETURN_IF_ERROR(CheckOnDevice(t, op, arg));
  if (t.dtype() != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, " must be f32, got ", t.DebugString()));
  }
  return absl::OkStatus();
}

absl::Status CheckI32(const Tensor& t, absl::string_view op, absl::string_view arg) {
  RETURN_IF_ERROR(CheckOnDevice(t, op, arg));
  if (t.dtype() != DType::kI32) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, " must be i32, got ", t.DebugString()));
  }
  return absl::OkStatus();
}

absl::Status CheckNumel(const Tensor& t, int64_t numel, absl::string_view op, absl::string_view arg) {
  if (t.numel() != numel) {
    if (t.rank() <= 1) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, " has shape ", ShapeString(t.shape()),
                                                     ", expected [", numel, "]"));
    }
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, " has shape ", ShapeString(t.shape()), " (",
                                                   t.numel(), " elements), expected ", numel, " elements"));
  }
  return absl::OkStatus();
}

absl::Status Check2D(const Tensor& t, int64_t rows, int64_t cols, absl::string_view op, absl::string_view arg) {
  const Tensor f = t.Flat2D();
  if ((rows >= 0 && f.dim(0) != rows) || (cols >= 0 && f.dim(1) != cols)) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, " is ", t.DebugString(), ", expected [",
                                                   rows < 0 ? std::string("*") : std::to_string(rows), ",",
                                                   cols < 0 ? std::string("*") : std::to_string(cols), "]"));
  }
  return absl::OkStatus();
}

bool Overlaps(const Tensor& a, const Tensor& b) {
  if (a.nbytes() == 0 || b.nbytes() == 0) return false;
  const char* a0 = static_cast<const char*>(a.raw());
  const char* b0 = static_cast<const char*>(b.raw());
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

ByteRange RangeOf(const Tensor& t) {
  const uintptr_t b = reinterpret_cast<uintptr_t>(t.raw());
  return {b, b + t.nbytes()};
}

// O(n log n): the written ranges sorted must be disjoint, and no read range may meet one of them.
bool AnyOverlap(std::vector<ByteRange> written, absl::Span<const ByteRange> read) {
  std::sort(written.begin(), written.end());
  for (size_t i = 1; i < written.size(); ++i) {
    if (written[i].first < written[i - 1].second) return true;
  }
  for (const ByteRange& r : read) {
    auto it = std::lower_bound(written.begin(), written.end(), ByteRange{r.second, 0});  // first at/after r's end
    if (it != written.begin() && std::prev(it)->second > r.first) return true;
  }
  return false;
}

// ---- CudaBackend: lifetime ----------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(int ordinal, const BackendOptions& options) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the (non-sticky) error so later calls start clean
    return absl::FailedPreconditionError(
        absl::StrCat("no usable CUDA device: cudaGetDeviceCount failed: ", cudaGetErrorString(e)));
  }
  if (count == 0) return absl::FailedPreconditionError("no usable CUDA device: cudaGetDeviceCount returned 0");
  if (ordinal < 0 || ordinal >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("CUDA device ", ordinal, " requested but only ", count, " present"));
  }
  std::unique_ptr<CudaBackend> b(new CudaBackend());
  b->ctx_ = std::make_shared<DeviceContext>();
  b->ctx_->ordinal = ordinal;
  RETURN_IF_ERROR(CudaStatus(cudaSetDevice(ordinal), "cudaSetDevice"));
  cudaDeviceProp prop{};
  RETURN_IF_ERROR(CudaStatus(cudaGetDeviceProperties(&prop, ordinal), "cudaGetDeviceProperties"));
  if (prop.major < 8) {
    return absl::FailedPreconditionError(absl::StrCat("CUDA device ", ordinal, " (", prop.name, ") has compute capability ",
                                                      prop.major, ".", prop.minor, "; this backend needs 8.0+ (bf16)"));
  }
  b->name_ = absl::StrCat("cuda:", ordinal, " (", prop.name, ", sm_", prop.major, prop.minor, ")");
  // The tiled attention kernels need more shared memory per block than pre-Hopper GPUs grant.
  b->tiled_attention_available_ =
      prop.sharedMemPerBlockOptin >= static_cast<size_t>(cuda_kernels::TiledAttentionSharedBytes());
  // Keep freed blocks in the stream-ordered pool instead of returning them to the driver at every
  // synchronization: per-op activations are allocated and freed at a high rate.
  cudaMemPool_t pool = nullptr;
  RETURN_IF_ERROR(CudaStatus(cudaDeviceGetDefaultMemPool(&pool, ordinal), "cudaDeviceGetDefaultMemPool"));
  uint64_t threshold = UINT64_MAX;
  RETURN_IF_ERROR(CudaStatus(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold),
                             "cudaMemPoolSetAttribute"));
  // Stream priority: numerically lower is higher; `greatest` is the highest the device offers.
  int least_priority = 0, greatest_priority = 0;
  RETURN_IF_ERROR(CudaStatus(cudaDeviceGetStreamPriorityRange(&least_priority, &greatest_priority),
                             "cudaDeviceGetStreamPriorityRange"));
  RETURN_IF_ERROR(CudaStatus(cudaStreamCreateWithPriority(&b->ctx_->stream, cudaStreamNonBlocking,
                                                          options.high_priority ? greatest_priority : least_priority),
                             "cudaStreamCreateWithPriority"));
  if (options.high_priority) absl::StrAppend(&b->name_, " [high-priority stream]");
  if (options.memory_limit_bytes > 0) b->budget_ = std::make_shared<MemoryBudget>(options.memory_limit_bytes);
  RETURN_IF_ERROR(CublasStatus(cublasCreate(&b->cublas_), "cublasCreate"));
  RETURN_IF_ERROR(CublasStatus(cublasSetStream(b->cublas_, b->stream()), "cublasSetStream"));
  RETURN_IF_ERROR(CudaStatus(cudaMalloc(&b->err_word_, sizeof(int)), "cudaMalloc(error word)"));
  RETURN_IF_ERROR(CudaStatus(cudaMemset(b->err_word_, 0, sizeof(int)), "cudaMemset(error word)"));
  RETURN_IF_ERROR(CudaStatus(cudaMallocHost(&b->err_host_, sizeof(int)), "cudaMallocHost"));
  RETURN_IF_ERROR(CudaStatus(cudaMalloc(&b->sumsq_dev_, sizeof(double)), "cudaMalloc(sumsq)"));
  RETURN_IF_ERROR(CudaStatus(cudaMalloc(&b->check_word_, sizeof(int)), "cudaMalloc(check word)"));
  RETURN_IF_ERROR(CudaStatus(cudaMallocHost(&b->sumsq_host_, sizeof(double)), "cudaMallocHost"));
  b->eager_index_checks_ = options.eager_index_checks;
  b->uploads_ = std::make_unique<UploadRing>(b->stream());
  RETURN_IF_ERROR(b->uploads_->Init());
  // TESSERA_CUDA_STAGED_COPY=0 keeps large uploads on the compute stream (for comparison benchmarks).
  if (const char* env = std::getenv("TESSERA_CUDA_STAGED_COPY"); env == nullptr || std::string(env) != "0") {
    b->staged_ = std::make_unique<StagedCopier>(b->stream());
    RETURN_IF_ERROR(b->staged_->Init());
  }
  if (const char* env = std::getenv("TESSERA_CUDA_EAGER_INDEX_CHECKS"); env != nullptr) {
    b->eager_index_checks_ = std::string(env) != "0";
  }
  if (const char* env = std::getenv("TESSERA_CUDA_TF32"); env != nullptr) {
    b->allow_tf32_ = std::string(env) == "1";
  }
  if (const char* env = std::getenv("TESSERA_CUDA_ATTENTION"); env != nullptr) {
    const std::string v(env);
    if (v == "rowwise") {
      b->attention_impl_ = AttentionImpl::kRowwise;
    } else if (v != "tiled") {
      return absl::InvalidArgumentError(absl::StrCat("TESSERA_CUDA_ATTENTION='", v, "': expected tiled or rowwise"));
    }
  }
  if (const char* env = std::getenv("TESSERA_GROUPED_GEMM"); env != nullptr) {
    const std::string v(env);
    if (v == "kernel") {
      b->grouped_impl_ = GroupedGemmImpl::kKernel;
    } else if (v == "chunks") {
      b->grouped_impl_ = GroupedGemmImpl::kCublasChunks;
    } else if (v != "cublas") {
      return absl::InvalidArgumentError(
          absl::StrCat("TESSERA_GROUPED_GEMM='", v, "': expected cublas, kernel or chunks"));
    }
  }
  return b;
}

CudaBackend::~CudaBackend() {
  if (ctx_ == nullptr) return;
  cudaSetDevice(ctx_->ordinal);
  if (ctx_->stream != nullptr) cudaStreamSynchronize(ctx_->stream);
  uploads_.reset();
  staged_.reset();
  if (cublas_ != nullptr) cublasDestroy(cublas_);
  if (err_word_ != nullptr) cudaFree(err_word_);
  if (err_host_ != nullptr) cudaFreeHost(err_host_);
  if (sumsq_dev_ != nullptr) cudaFree(sumsq_dev_);
  if (check_word_ != nullptr) cudaFree(check_word_);
  if (sumsq_host_ != nullptr) cudaFreeHost(sumsq_host_);
}

absl::Status CudaBackend::Enter() { return CudaStatus(cudaSetDevice(ctx_->ordinal), "cudaSetDevice"); }

absl::Status CudaBackend::SyncAndCheck(absl::string_view what) {
  RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(err_host_, err_word_, sizeof(int), cudaMemcpyDeviceToHost, stream()),
                             absl::StrCat(what, ": reading the error word")));
  RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream()), what));
  const int bits = *err_host_;
  if (bits == 0) return absl::OkStatus();
  RETURN_IF_ERROR(CudaStatus(cudaMemsetAsync(err_word_, 0, sizeof(int), stream()), "resetting the error word"));
  std::string ops;
  auto add = [&](int bit, const char* name) {
    if (bits & bit) absl::StrAppend(&ops, ops.empty() ? "" : ", ", name);
  };
  add(cuda_kernels::kErrGatherIndex, "GatherRows idx");
  add(cuda_kernels::kErrScatterIndex, "ScatterAddRows idx");
  add(cuda_kernels::kErrRowDotIndex, "RowDotGather idx");
  add(cuda_kernels::kErrEmbeddingIndex, "Embedding ids");
  add(cuda_kernels::kErrTargetIndex, "CrossEntropy targets");
  add(cuda_kernels::kErrMoeSortValue, "MoeSortAssignments topk_idx/token_rank/weight_table");
  add(cuda_kernels::kErrMoeOffsets, "GroupedMatmulByOffsets offsets");
  return absl::InvalidArgumentError(absl::StrCat(
      what, ": an earlier op got out-of-range index values (", ops, "); the affected rows were skipped"));
}

absl::Status CudaBackend::CheckIndexRange(const Tensor& idx, int32_t lo, int32_t hi, absl::string_view op,
                                          absl::string_view arg) {
  if (!eager_index_checks_ || idx.numel() == 0) return absl::OkStatus();
  // 0x7f bytes: 2139062143, above any position of an index tensor we accept (numel < 2^31).
  constexpr int kNone = 0x7f7f7f7f;
  if (idx.numel() >= kNone) return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, " is too long"));
  RETURN_IF_ERROR(CudaStatus(cudaMemsetAsync(check_word_, 0x7f, sizeof(int), stream()), op));
  RETURN_IF_ERROR(CudaStatus(cuda_kernels::CheckIndices(idx.data<int32_t>(), idx.numel(), lo, hi, check_word_, stream()), op));
  RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(err_host_, check_word_, sizeof(int), cudaMemcpyDeviceToHost, stream()), op));
  RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream()), op));
  const int pos = *err_host_;
  if (pos == kNone) return absl::OkStatus();
  int32_t value = 0;
  RETURN_IF_ERROR(CudaStatus(cudaMemcpy(&value, idx.data<int32_t>() + pos, sizeof(int32_t), cudaMemcpyDeviceToHost), op));
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, "[", pos, "] = ", value, " is outside [",
                                                 lo == INT32_MIN ? std::string("-inf") : std::to_string(lo), ", ", hi, ")"));
}

// ---- Memory ---------------------------------------------------------------------------------------

absl::StatusOr<Tensor> CudaBackend::Alloc(std::vector<int64_t> shape, DType dtype) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return absl::InvalidArgumentError(absl::StrCat("Alloc: negative dim in ", ShapeString(shape)));
    n *= d;
  }
  RETURN_IF_ERROR(Enter());
  const size_t bytes = static_cast<size_t>(n) * DTypeSize(dtype);
  void* p = nullptr;
  ASSIGN_OR_RETURN(std::shared_ptr<void> lease, MemoryBudget::Lease(budget_, static_cast<int64_t>(bytes),
                                                                    absl::StrCat("Alloc ", DTypeName(dtype), ShapeString(shape))));
  if (bytes > 0) {
    RETURN_IF_ERROR(CudaStatus(cudaMallocAsync(&p, bytes, stream()),
                               absl::StrCat("Alloc ", DTypeName(dtype), ShapeString(shape), " (", bytes, " bytes)")));
  }
  std::shared_ptr<DeviceContext> ctx = ctx_;
  std::shared_ptr<void> owner(p, [ctx, lease = std::move(lease)](void* q) {
    if (q != nullptr) {
      cudaSetDevice(ctx->ordinal);
      cudaFreeAsync(q, ctx->stream);
    }
  });
  return Tensor(std::move(owner), p, std::move(shape), dtype, DeviceKind::kCuda);
}

absl::Status CudaBackend::Fill(Tensor& t, float value) {
  RETURN_IF_ERROR(CheckOnDevice(t, "Fill", "t"));
  RETURN_IF_ERROR(Enter());
  return CudaStatus(cuda_kernels::Fill(t.raw(), Dt(t), t.numel(), value, t.dtype() == DType::kI32, stream()), "Fill");
}

absl::Status CudaBackend::CopyFromHost(const void* src, size_t nbytes, Tensor& dst) {
  RETURN_IF_ERROR(CheckOnDevice(dst, "CopyFromHost", "dst"));
  if (nbytes != dst.nbytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CopyFromHost: nbytes ", nbytes, " != dst.nbytes() ", dst.nbytes(), " for ", dst.DebugString()));
  }
  if (nbytes == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Enter());
  cudaPointerAttributes attr{};
  const bool pinned = cudaPointerGetAttributes(&attr, src) == cudaSuccess && attr.type != cudaMemoryTypeUnregistered;
  cudaGetLastError();  // cudaPointerGetAttributes may leave an error for unregistered memory
  if (!pinned && staged_ != nullptr && nbytes >= StagedCopier::kMinBytes) {
    // Large loads (overlays, checkpoints): own pinned staging on the copy stream, see cuda_staged_copy.h.
    return staged_->Copy(dst.raw(), src, nbytes);
  }
  RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(dst.raw(), src, nbytes, cudaMemcpyHostToDevice, stream()), "CopyFromHost"));
  // From pageable memory the copy has been staged when cudaMemcpyAsync returns, so the caller may reuse
  // `src`. From pinned memory it is truly asynchronous: wait, since the contract lets the caller free it.
  if (pinned) RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream()), "CopyFromHost (pinned source)"));
  return absl::OkStatus();
}

absl::Status CudaBackend::CopyToHost(const Tensor& src, void* dst, size_t nbytes) {
  RETURN_IF_ERROR(CheckOnDevice(src, "CopyToHost", "src"));
  if (nbytes != src.nbytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CopyToHost: nbytes ", nbytes, " != src.nbytes() ", src.nbytes(), " for ", src.DebugString()));
  }
  RETURN_IF_ERROR(Enter());
  if (nbytes > 0) {
    RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(dst, src.raw(), nbytes, cudaMemcpyDeviceToHost, stream()), "CopyToHost"));
  }
  return SyncAndCheck("CopyToHost");
}

absl::Status CudaBackend::Copy(const Tensor& src, Tensor& dst) {
  RETURN_IF_ERROR(CheckOnDevice(src, "Copy", "src"));
  RETURN_IF_ERROR(CheckOnDevice(dst, "Copy", "dst"));
  RETURN_IF_ERROR(CheckNumel(dst, src.numel(), "Copy", "dst"));
  RETURN_IF_ERROR(Enter());
  if (src.dtype() == dst.dtype()) {
    if (src.nbytes() == 0 || src.raw() == dst.raw()) return absl::OkStatus();
    return CudaStatus(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice, stream()), "Copy");
  }
  if (src.dtype() == DType::kI32 || dst.dtype() == DType::kI32) {
    return absl::InvalidArgumentError(absl::StrCat("Copy: cannot convert between ", src.DebugString(), " and ",
                                                   dst.DebugString(), " (only float dtypes convert)"));
  }
  if (Overlaps(src, dst)) return absl::InvalidArgumentError("Copy: converting src and dst must not overlap");
  return CudaStatus(cuda_kernels::Convert(src.raw(), Dt(src), dst.raw(), Dt(dst), src.numel(), stream()), "Copy");
}

// One launch for the whole batch. Pairs whose byte ranges overlap (any src/dst with any dst) would race
// inside the launch, so then the pairs run one by one, in order (the interface's definition).
absl::Status CudaBackend::CopyMany(absl::Span<const CopyPair> pairs) {
  std::vector<cuda_kernels::CopyDesc> desc;
  desc.reserve(pairs.size());
  int64_t max_n = 0;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const CopyPair& p = pairs[i];
    const std::string arg = absl::StrCat("pairs[", i, "]");
    if (p.src == nullptr || p.dst == nullptr) return absl::InvalidArgumentError(absl::StrCat("CopyMany: ", arg, " has a null tensor"));
    RETURN_IF_ERROR(CheckOnDevice(*p.src, "CopyMany", arg + ".src"));
    RETURN_IF_ERROR(CheckOnDevice(*p.dst, "CopyMany", arg + ".dst"));
    RETURN_IF_ERROR(CheckNumel(*p.dst, p.src->numel(), "CopyMany", arg + ".dst"));
    if (p.src->dtype() != p.dst->dtype() && (p.src->dtype() == DType::kI32 || p.dst->dtype() == DType::kI32)) {
      return absl::InvalidArgumentError(absl::StrCat("CopyMany: ", arg, " cannot convert between ",
                                                     p.src->DebugString(), " and ", p.dst->DebugString()));
    }
    if (p.src->numel() == 0) continue;
    desc.push_back(cuda_kernels::CopyDesc{p.src->raw(), p.dst->raw(), p.src->numel(), Dt(*p.src), Dt(*p.dst)});
    max_n = std::max(max_n, p.src->numel());
  }
  std::vector<ByteRange> written, read;
  for (const auto& d : desc) {
    const uintptr_t src = reinterpret_cast<uintptr_t>(d.src), dst = reinterpret_cast<uintptr_t>(d.dst);
    written.push_back({dst, dst + static_cast<uintptr_t>(d.n) * DTypeSize(static_cast<DType>(d.dtd))});
    read.push_back({src, src + static_cast<uintptr_t>(d.n) * DTypeSize(static_cast<DType>(d.dts))});
  }
  const bool overlap = desc.size() > 65535 || AnyOverlap(std::move(written), read);  // also the grid limit
  if (overlap) return Backend::CopyMany(pairs);
  RETURN_IF_ERROR(Enter());
  if (desc.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(void* dev, uploads_->Upload(desc.data(), desc.size() * sizeof(cuda_kernels::CopyDesc)));
  return CudaStatus(cuda_kernels::CopyMany(static_cast<const cuda_kernels::CopyDesc*>(dev), static_cast<int>(desc.size()),
                                           max_n, stream()),
                    "CopyMany");
}

absl::Status CudaBackend::Synchronize() {
  RETURN_IF_ERROR(Enter());
  return SyncAndCheck("Synchronize");
}

}  // namespace cuda

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device_ordinal, const BackendOptions& options) {
  auto b = cuda::CudaBackend::Create(device_ordinal, options);
  if (!b.ok()) return b.status();
  return std::unique_ptr<Backend>(std::move(*b));
}

namespace {

// The CUDA backend behind `backend`, or INVALID_ARGUMENT naming the setter `fn`.
absl::StatusOr<cuda::CudaBackend*> AsCuda(Backend& backend, const char* fn) {
  auto* cb = dynamic_cast<cuda::CudaBackend*>(&backend);
  if (cb == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(fn, ": backend '", backend.name(), "' is not CUDA"));
  }
  return cb;
}

}  // namespace

absl::Status SetCudaGroupedGemmImpl(Backend& backend, GroupedGemmImpl impl) {
  ASSIGN_OR_RETURN(cuda::CudaBackend * cb, AsCuda(backend, "SetCudaGroupedGemmImpl"));
  cb->set_grouped_gemm_impl(impl);
  return absl::OkStatus();
}

absl::Status SetCudaEagerIndexChecks(Backend& backend, bool on) {
  ASSIGN_OR_RETURN(cuda::CudaBackend * cb, AsCuda(backend, "SetCudaEagerIndexChecks"));
  cb->set_eager_index_checks(on);
  return absl::OkStatus();
}

absl::Status SetCudaAllowTf32(Backend& backend, bool on) {
  ASSIGN_OR_RETURN(cuda::CudaBackend * cb, AsCuda(backend, "SetCudaAllowTf32"));
  cb->set_allow_tf32(on);
  return absl::OkStatus();
}

absl::Status SetCudaAttentionImpl(Backend& backend, AttentionImpl impl) {
  ASSIGN_OR_RETURN(cuda::CudaBackend * cb, AsCuda(backend, "SetCudaAttentionImpl"));
  cb->set_attention_impl(impl);
  return absl::OkStatus();
}

}  // namespace tessera
