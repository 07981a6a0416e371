// KvCache: one sequence's keys and values for every layer, for incremental decoding.
//
// Memory contract: Create() allocates, on the model's backend, K and V of [capacity, KVH, head_dim]
// per layer up front in `dtype` (f32, or bf16 on the CUDA backend: 2 * layers * capacity * KVH *
// head_dim * sizeof(dtype) bytes; see bytes()); nothing is allocated later. Positions [0, length()) hold valid keys/values (post-RoPE, post-norm).
//
// Model::Forward appends a sequence's new tokens at position length() and advances length() only
// when the whole forward succeeds; a forward that would exceed capacity() fails with
// RESOURCE_EXHAUSTED before touching the cache. One cache serves one sequence; a cache must not
// appear twice in one batch, nor be used by two Forward calls at once.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/backend/backend.h"
#include "core/model/config.h"

namespace tessera {

class KvCache {
 public:
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(const ModelConfig& config, int64_t capacity,
                                                         Backend* backend, DType dtype = DType::kF32);

  // Bytes one position takes across every layer's K and V: what Create allocates per unit of capacity
  // (the KV memory budget divides by this; see core/runtime/context_plan.h).
  static int64_t BytesPerPosition(const ModelConfig& config, DType dtype);

  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  int64_t bytes() const;
  // Forget every position (keeps the memory).
  void Reset() { length_ = 0; }
  // Keep positions [0, new_length); INVALID_ARGUMENT if new_length > length() or < 0.
  absl::Status Truncate(int64_t new_length);
  // Prefix reuse (core/runtime/prefix_cache.h): marks positions [length(), new_length) valid after the
  // caller wrote them through views of k()/v() (Tensor::Rows) with keys/values this model computed for
  // the same tokens and overlay. INVALID_ARGUMENT if new_length < length() or > capacity().
  absl::Status Extend(int64_t new_length);

  // [capacity, KVH, head_dim] for `layer` (rows >= length() are garbage).
  const Tensor& k(int64_t layer) const { return k_[layer]; }
  const Tensor& v(int64_t layer) const { return v_[layer]; }

 private:
  friend class Model;
  KvCache() = default;
  Tensor& mutable_k(int64_t layer) { return k_[layer]; }
  Tensor& mutable_v(int64_t layer) { return v_[layer]; }
  void set_length(int64_t n) { length_ = n; }

  int64_t capacity_ = 0;
  int64_t length_ = 0;
  int64_t num_layers_ = 0;
  std::vector<Tensor> k_, v_;
};

}  // namespace tessera
