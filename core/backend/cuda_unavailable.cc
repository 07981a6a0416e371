// Built only when CMake found no nvcc: the CUDA backend factory reports why there is none.
#include "core/backend/backend.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int, const BackendOptions&) {
  return absl::FailedPreconditionError("this build of Tessera has no CUDA backend (nvcc was not found at configure time)");
}

}  // namespace tessera
