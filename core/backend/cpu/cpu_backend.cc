// Placeholder until the CPU backend lands.
#include "core/backend/backend.h"
namespace tessera {
std::unique_ptr<Backend> MakeCpuBackend() { return nullptr; }
}  // namespace tessera
