// Placeholder until the CUDA backend lands.
#include "core/backend/backend.h"
namespace tessera {
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int) {
  return absl::FailedPreconditionError("CUDA backend not implemented yet");
}
}  // namespace tessera
