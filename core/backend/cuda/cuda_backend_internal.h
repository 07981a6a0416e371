// Private to the CUDA backend: the class shared by cuda_backend.cc (factory, memory, synchronization,
// error word, descriptor uploads), cuda_ops.cc (validation + launches of every non-GEMM op),
// cuda_matmul.cc (cuBLAS dense GEMM, the two grouped GEMM implementations) and cuda_moe_routing.cc
// (device-side MoE grouping).
//
// Device model: one CUDA stream per backend; every op is enqueued on it and returns without waiting.
// Tensors are allocated with cudaMallocAsync on that stream and freed with cudaFreeAsync on it, so a
// tensor's memory is reused only after the work queued before its release; tensors keep the stream
// alive (through the shared DeviceContext) even if they outlive the backend.
// Errors: CUDA/cuBLAS failures become INTERNAL (RESOURCE_EXHAUSTED for out-of-memory) at the op that
// saw them; bad index values found by kernels are reported as INVALID_ARGUMENT by the next
// Synchronize / CopyToHost / SumSquares.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "absl/strings/string_view.h"
#include "core/backend/backend.h"
#include "core/backend/memory_budget.h"
#include "core/backend/cuda/cuda_backend.h"
#include "core/backend/cuda/cuda_grouped_problems.h"
#include "core/backend/cuda/cuda_kernels.h"
#include "core/backend/cuda/cuda_staged_copy.h"

namespace tessera::cuda {

absl::Status CudaStatus(cudaError_t e, absl::string_view what);
absl::Status CublasStatus(cublasStatus_t s, absl::string_view what);

// Owns the stream; shared by the backend and every tensor it allocated.
struct DeviceContext {
  int ordinal = 0;
  cudaStream_t stream = nullptr;
  ~DeviceContext();
};

// Small per-call descriptor arrays (grouped GEMM problems, attention sequences, pointer arrays) go to
// the device through a ring of pinned staging buffers: host memcpy into slot i, async copy on the
// compute stream, and an event that says when slot i's staging buffer may be rewritten (kSlots calls later).
class UploadRing {
 public:
  // Each Upload waits until the copy that last used its slot has run, so kSlots bounds how many uploads
  // the host may queue ahead of the device: a 16-layer decode step with device routing uploads ~5 small
  // tables per layer (KV append, attention, three grouped GEMMs), and the whole step should queue
  // without the host waiting. Slots grow on demand from 4 KiB.
  static constexpr int kSlots = 128;
  explicit UploadRing(cudaStream_t stream) : stream_(stream) {}
  ~UploadRing();
  absl::Status Init();
  // Returns a device pointer holding a copy of host[0, bytes) once the stream reaches this point.
  absl::StatusOr<void*> Upload(const void* host, size_t bytes);

 private:
  struct Slot {
    void* host = nullptr;
    void* dev = nullptr;
    size_t cap = 0;
    cudaEvent_t done = nullptr;
  };
  cudaStream_t stream_;
  std::array<Slot, kSlots> slots_{};
  int next_ = 0;
};

class CudaBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(int ordinal, const BackendOptions& options = {});
  ~CudaBackend() override;

  DeviceKind device() const override { return DeviceKind::kCuda; }
  std::string name() const override { return name_; }

  absl::StatusOr<Tensor> Alloc(std::vector<int64_t> shape, DType dtype) override;
  absl::Status Fill(Tensor& t, float value) override;
  absl::Status CopyFromHost(const void* src, size_t nbytes, Tensor& dst) override;
  absl::Status CopyToHost(const Tensor& src, void* dst, size_t nbytes) override;
  absl::Status Copy(const Tensor& src, Tensor& dst) override;
  absl::Status CopyMany(absl::Span<const CopyPair> pairs) override;
  absl::Status Synchronize() override;

  absl::Status Add(const Tensor& a, const Tensor& b, Tensor& out) override;
  absl::Status Axpy(float alpha, const Tensor& x, Tensor& y) override;
  absl::Status Scale(Tensor& x, float alpha) override;
  absl::StatusOr<double> SumSquares(const Tensor& x) override;

  absl::Status Matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
                      float beta) override;
  absl::Status GroupedMatmul(const Tensor& x, absl::Span<const GemmGroup> groups, Tensor& y) override;
  absl::Status GroupedMatmulInputGrad(const Tensor& dy, absl::Span<const GemmGroup> groups,
                                      Tensor& dx) override;
  absl::Status GroupedMatmulWeightGrad(const Tensor& x, const Tensor& dy,
                                       absl::Span<const GemmGroup> groups) override;

  // Device-side MoE routing (cuda_moe_routing.cc): no host synchronization; bad device values set a bit
  // of the error word.
  absl::Status MoeSortAssignments(const Tensor& topk_idx, const Tensor& topk_w, const Tensor& token_rank,
                                  const Tensor& weight_table, Tensor& token_idx, Tensor& gate_w,
                                  Tensor& offsets) override;
  absl::Status GroupedMatmulByOffsets(const Tensor& x, absl::Span<const Tensor* const> weights, const Tensor& offsets,
                                      Tensor& y) override;

  absl::Status GatherRows(const Tensor& src, const Tensor& idx, const Tensor* scale, Tensor& dst) override;
  absl::Status ScatterAddRows(const Tensor& src, const Tensor& idx, const Tensor* scale, Tensor& dst) override;
  absl::Status RowDotGather(const Tensor& a, const Tensor& b, const Tensor& idx, Tensor& out) override;

  absl::Status EmbeddingForward(const Tensor& table, const Tensor& ids, Tensor& out) override;
  absl::Status EmbeddingBackward(const Tensor& ids, const Tensor& dout, Tensor& dtable) override;

  absl::Status RmsNormForward(const Tensor& x, const Tensor& weight, float eps, Tensor& out,
                              Tensor* rstd) override;
  absl::Status RmsNormBackward(const Tensor& x, const Tensor& weight, const Tensor& rstd, const Tensor& dout,
                               Tensor& dx, Tensor* dweight) override;

  absl::Status Rope(Tensor& x, const Tensor& positions, float theta, bool inverse) override;

  absl::Status AttentionForward(const Tensor& q, absl::Span<const AttentionSeq> seqs, float scale, Tensor& out,
                                Tensor* lse) override;
  absl::Status AttentionBackward(const Tensor& q, absl::Span<const AttentionSeq> seqs, float scale,
                                 const Tensor& out, const Tensor& lse, const Tensor& dout, Tensor& dq) override;

  absl::Status RouterForward(const Tensor& logits, int k, bool normalize, Tensor& probs, Tensor& topk_idx,
                             Tensor& topk_w) override;
  absl::Status RouterBackward(const Tensor& probs, const Tensor& topk_idx, const Tensor& topk_w, bool normalize,
                              const Tensor& dtopk_w, Tensor& dlogits) override;

  absl::Status SwiGluForward(const Tensor& gate, const Tensor& up, Tensor& out) override;
  absl::Status SwiGluBackward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate,
                              Tensor& dup) override;

  absl::Status LogSoftmax(const Tensor& logits, Tensor& out) override;
  absl::Status CrossEntropyForward(const Tensor& logits, const Tensor& targets, Tensor& loss,
                                   Tensor* lse) override;
  absl::Status CrossEntropyBackward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                    const Tensor& dloss, Tensor& dlogits) override;

  absl::Status AdamW(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p) override;
  absl::Status AdamWMany(absl::Span<const AdamWTensor> entries, const AdamWParams& p) override;

  void set_grouped_gemm_impl(GroupedGemmImpl impl) { grouped_impl_ = impl; }
  void set_eager_index_checks(bool on) { eager_index_checks_ = on; }
  void set_allow_tf32(bool on) { allow_tf32_ = on; }
  void set_attention_impl(AttentionImpl impl) { attention_impl_ = impl; }

 private:
  CudaBackend() = default;

  cudaStream_t stream() const { return ctx_->stream; }
  // Makes this backend's device current for the calling thread (ops may be called from any thread).
  absl::Status Enter();
  // Waits for the stream, then turns a set bit of the device error word into INVALID_ARGUMENT.
  absl::Status SyncAndCheck(absl::string_view what);
  // With eager index checks (the default): INVALID_ARGUMENT naming op/arg unless every idx value is in
  // [lo, hi). Costs one tiny kernel and a stream synchronization; without eager checks it returns OK and
  // the kernels' error word reports bad indices at the next synchronization instead.
  absl::Status CheckIndexRange(const Tensor& idx, int32_t lo, int32_t hi, absl::string_view op,
                               absl::string_view arg);
  // One grouped GEMM problem per non-empty group, launched with the selected implementation.
  using GroupedMode = cuda_kernels::GroupedMode;
  absl::Status RunGrouped(GroupedMode mode, const Tensor& lhs, const Tensor* x_for_wgrad,
                          absl::Span<const GemmGroup> groups, Tensor* out, absl::string_view op);
  // cuBLAS's grouped API over `problems`, equal shapes batched; UNIMPLEMENTED for unsupported types.
  absl::Status CublasGrouped(absl::Span<const cuda_kernels::GemmProblem> problems, DType dtab, DType dtc,
                             absl::string_view op);
  // cublasGemmBatchedEx once per distinct shape of `problems`; UNIMPLEMENTED (nothing enqueued) for
  // unsupported types.
  absl::Status CublasBatched(absl::Span<const cuda_kernels::GemmProblem> problems, DType dtab, DType dtc,
                             absl::string_view op);
  // CUBLAS_COMPUTE_32F, or its TF32 variant for f32 inputs when allow_tf32_.
  cublasComputeType_t ComputeType(DType a) const;
  // One launch of the selected grouped implementation over `problems` (which must not share outputs).
  absl::Status LaunchGrouped(absl::Span<const cuda_kernels::GemmProblem> problems, DType dta, DType dtb, DType dtc,
                             absl::string_view op);

  std::shared_ptr<DeviceContext> ctx_;
  std::string name_;
  cublasHandle_t cublas_ = nullptr;
  int* err_word_ = nullptr;     // device
  int* err_host_ = nullptr;     // pinned
  double* sumsq_dev_ = nullptr;
  double* sumsq_host_ = nullptr;  // pinned
  std::unique_ptr<UploadRing> uploads_;
  std::unique_ptr<StagedCopier> staged_;  // large pageable CopyFromHost (cuda_staged_copy.h)
  GroupedGemmImpl grouped_impl_ = GroupedGemmImpl::kCublas;
  bool eager_index_checks_ = true;
  bool allow_tf32_ = false;  // f32 GEMMs on TF32 tensor cores (SetCudaAllowTf32)
  AttentionImpl attention_impl_ = AttentionImpl::kTiled;
  bool tiled_attention_available_ = false;  // the device grants the tiled kernels' shared memory
  int* check_word_ = nullptr;  // device, for CheckIndexRange
  std::shared_ptr<MemoryBudget> budget_;  // BackendOptions::memory_limit_bytes; null: no cap
};

// Argument checks shared by the op files; each names the op and argument in its INVALID_ARGUMENT.
absl::Status CheckOnDevice(const Tensor& t, absl::string_view op, absl::string_view arg);
absl::Status CheckFloat(const Tensor& t, absl::string_view op, absl::string_view arg);  // f32/bf16/f16 on device
absl::Status CheckF32(const Tensor& t, absl::string_view op, absl::string_view arg);
absl::Status CheckI32(const Tensor& t, absl::string_view op, absl::string_view arg);
absl::Status CheckNumel(const Tensor& t, int64_t numel, absl::string_view op, absl::string_view arg);
// t.Flat2D() must be [rows, cols] (a negative expected value matches anything).
absl::Status Check2D(const Tensor& t, int64_t rows, int64_t cols, absl::string_view op, absl::string_view arg);
inline int Dt(const Tensor& t) { return static_cast<int>(t.dtype()); }
// True when the two tensors' byte ranges intersect (the CPU backend's rule for forbidden aliasing).
bool Overlaps(const Tensor& a, const Tensor& b);
// A batched op's tensors as byte ranges [begin, end): true when two written ranges intersect, or a read
// range meets a written one. Batched ops (CopyMany, AdamWMany) then run their entries one by one, in
// order, instead of in one launch where they would race.
using ByteRange = std::pair<uintptr_t, uintptr_t>;
ByteRange RangeOf(const Tensor& t);
bool AnyOverlap(std::vector<ByteRange> written, absl::Span<const ByteRange> read);

}  // namespace tessera::cuda
