// The problem tables of the grouped expert matmuls: host code shared by cuda_matmul.cc and the kernel
// emulation tests (tests/core/backend_cuda), so the tests run the kernels on exactly the tables the
// backend builds. Plain C++ (no CUDA, no Abseil); see GemmProblem in cuda_kernels.h for the row-major
// problem convention.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/backend/cuda/cuda_kernels.h"

namespace tessera::cuda_kernels {

enum class GroupedMode { kForward, kInputGrad, kWeightGrad };

// One group: rows [row_begin, row_begin + rows) of the activations, its weight [w_out, w_in] and (weight
// grad only) its gradient, same shape.
struct GroupedOperand {
  int64_t row_begin = 0, rows = 0;
  const void* weight = nullptr;
  void* weight_grad = nullptr;
};

// The call's activations (row-major, contiguous) and their element sizes in bytes:
//   forward      y[g] = x[g] @ W^T     lhs = x [M, w_in],   out = y [M, w_out]
//   input grad   dx[g] = dy[g] @ W     lhs = dy [M, w_out], out = dx [M, w_in]
//   weight grad  dW += dy[g]^T @ x[g]  lhs = dy [M, w_out], x = x [M, w_in] (out unused)
struct GroupedActivations {
  const void* lhs = nullptr;
  size_t lhs_size = 0;
  const void* x = nullptr;
  size_t x_size = 0;
  void* out = nullptr;
  size_t out_size = 0;
};

// One problem per group with rows > 0 (weight grad: and a gradient), in group order; tile_begin unset.
std::vector<GemmProblem> GroupedProblems(GroupedMode mode, const GroupedActivations& act, int64_t w_out,
                                         int64_t w_in, const std::vector<GroupedOperand>& groups);

// Sets every problem's tile_begin (prefix sum of kGroupedTileM x kGroupedTileN output tiles, the grouped
// kernel's grid) and returns the total.
int64_t AssignGroupedTiles(std::vector<GemmProblem>& probs);

// GroupedGemmImpl::kCublasChunks: problems whose M rows are rows of A and C (trans_a == 0: forward, input
// grad) become floor(M / rows) problems of exactly `rows` rows plus one of the remainder (if any); the
// others stay whole. a_size / c_size: element sizes of A and C in bytes.
struct RowChunks {
  std::vector<GemmProblem> full;  // every one has m == rows
  std::vector<GemmProblem> rest;  // remainders and whole problems
};
RowChunks SplitIntoRowChunks(const std::vector<GemmProblem>& probs, int64_t rows, size_t a_size, size_t c_size);

}  // namespace tessera::cuda_kernels
