// Built only when CMake found no nvcc: the CUDA backend factory reports why there is none, and the CUDA
// backend's setters (cuda/cuda_backend.h) say the same, so callers and tests link in a CPU-only build.
#include "absl/strings/str_cat.h"
#include "core/backend/cuda/cuda_backend.h"

namespace tessera {
namespace {

absl::Status NoCuda(absl::string_view what) {
  return absl::FailedPreconditionError(
      absl::StrCat(what, ": this build of Tessera has no CUDA backend (nvcc was not found at configure time)"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int, const BackendOptions&) { return NoCuda("MakeCudaBackend"); }
absl::Status SetCudaGroupedGemmImpl(Backend&, GroupedGemmImpl) { return NoCuda("SetCudaGroupedGemmImpl"); }
absl::Status SetCudaEagerIndexChecks(Backend&, bool) { return NoCuda("SetCudaEagerIndexChecks"); }
absl::Status SetCudaAllowTf32(Backend&, bool) { return NoCuda("SetCudaAllowTf32"); }
absl::Status SetCudaAttentionImpl(Backend&, AttentionImpl) { return NoCuda("SetCudaAttentionImpl"); }

}  // namespace tessera
