// OverlaySlabPool (see overlay_slab_pool.h). A slab's three tensors share one owner whose deleter puts
// the slab index back on the free list.
#include "core/runtime/overlay_slab_pool.h"

#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"

namespace tessera::runtime {

struct OverlaySlabPool::State {
  Tensor backing;  // [slabs * slab_bytes / element] of the pool's dtype: the one allocation
  ModelConfig config;
  DType dtype = DType::kF32;
  int64_t slab_bytes = 0;
  int64_t slabs = 0;
  std::mutex mu;
  std::vector<int64_t> free;  // slab indices, LIFO (recently freed memory is warm)
};

int64_t OverlaySlabPool::SlotBytes(const ModelConfig& c, DType dtype) {
  return 3 * c.expert_dim * c.hidden_size * static_cast<int64_t>(DTypeSize(dtype));
}

absl::StatusOr<std::unique_ptr<OverlaySlabPool>> OverlaySlabPool::Create(const ModelConfig& config, DType dtype,
                                                                         int64_t slabs, Backend* backend) {
  if (backend == nullptr) return absl::InvalidArgumentError("OverlaySlabPool: backend is null");
  if (slabs < 1) return absl::InvalidArgumentError(absl::StrCat("OverlaySlabPool: slabs must be >= 1, got ", slabs));
  if (dtype != DType::kF32 && dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("OverlaySlabPool: dtype must be f32 or bf16, got ", DTypeName(dtype)));
  }
  auto state = std::make_shared<State>();
  state->config = config;
  state->dtype = dtype;
  state->slab_bytes = SlotBytes(config, dtype);
  state->slabs = slabs;
  const int64_t slab_elems = 3 * config.expert_dim * config.hidden_size;
  ASSIGN_OR_RETURN(state->backing, backend->Alloc({slabs * slab_elems}, dtype));
  state->free.reserve(slabs);
  for (int64_t i = slabs - 1; i >= 0; --i) state->free.push_back(i);
  return std::unique_ptr<OverlaySlabPool>(new OverlaySlabPool(std::move(state)));
}

OverlaySlabPool::~OverlaySlabPool() = default;

absl::StatusOr<ExpertWeights> OverlaySlabPool::Acquire() {
  int64_t slab = -1;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->free.empty()) {
      return absl::ResourceExhaustedError(absl::StrCat("OverlaySlabPool: all ", state_->slabs, " slabs are in use"));
    }
    slab = state_->free.back();
    state_->free.pop_back();
  }
  // The owner shared by the slab's views: its deleter returns the slab (and keeps the state, hence the
  // backing allocation, alive until then).
  std::shared_ptr<State> st = state_;
  std::shared_ptr<void> owner(static_cast<void*>(nullptr), [st, slab](void*) {
    std::lock_guard<std::mutex> lock(st->mu);
    st->free.push_back(slab);
  });
  const ModelConfig& c = state_->config;
  const int64_t part = c.expert_dim * c.hidden_size;
  char* base = static_cast<char*>(state_->backing.raw()) + slab * state_->slab_bytes;
  const size_t part_bytes = static_cast<size_t>(part) * DTypeSize(state_->dtype);
  const DeviceKind device = state_->backing.device();
  ExpertWeights w;
  w.gate = Tensor(owner, base, ExpertPartShape(c, 0), state_->dtype, device);
  w.up = Tensor(owner, base + part_bytes, ExpertPartShape(c, 1), state_->dtype, device);
  w.down = Tensor(owner, base + 2 * part_bytes, ExpertPartShape(c, 2), state_->dtype, device);
  return w;
}

int64_t OverlaySlabPool::slabs() const { return state_->slabs; }
int64_t OverlaySlabPool::slab_bytes() const { return state_->slab_bytes; }
int64_t OverlaySlabPool::slabs_in_use() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->slabs - static_cast<int64_t>(state_->free.size());
}

}  // namespace tessera::runtime
