#include "core/backend/cuda/cuda_grouped_problems.h"

namespace tessera::cuda_kernels {

std::vector<GemmProblem> GroupedProblems(GroupedMode mode, const GroupedActivations& act, int64_t w_out,
                                         int64_t w_in, const std::vector<GroupedOperand>& groups) {
  auto row = [](const void* base, int64_t r, int64_t width, size_t size) {
    return static_cast<const char*>(base) + r * width * static_cast<int64_t>(size);
  };
  std::vector<GemmProblem> probs;
  for (const GroupedOperand& g : groups) {
    if (g.rows == 0 || (mode == GroupedMode::kWeightGrad && g.weight_grad == nullptr)) continue;
    GemmProblem p{};
    p.alpha = 1.0f;
    switch (mode) {
      case GroupedMode::kForward:  // y[g] = x[g] @ W^T: A = x rows, B = W (trans)
        p.a = row(act.lhs, g.row_begin, w_in, act.lhs_size);
        p.b = g.weight;
        p.c = const_cast<char*>(row(act.out, g.row_begin, w_out, act.out_size));
        p.m = g.rows, p.n = w_out, p.k = w_in, p.lda = w_in, p.ldb = w_in, p.ldc = w_out;
        p.trans_a = 0, p.trans_b = 1, p.beta = 0.0f;
        break;
      case GroupedMode::kInputGrad:  // dx[g] = dy[g] @ W
        p.a = row(act.lhs, g.row_begin, w_out, act.lhs_size);
        p.b = g.weight;
        p.c = const_cast<char*>(row(act.out, g.row_begin, w_in, act.out_size));
        p.m = g.rows, p.n = w_in, p.k = w_out, p.lda = w_out, p.ldb = w_in, p.ldc = w_in;
        p.trans_a = 0, p.trans_b = 0, p.beta = 0.0f;
        break;
      case GroupedMode::kWeightGrad:  // dW += dy[g]^T @ x[g]
        p.a = row(act.lhs, g.row_begin, w_out, act.lhs_size);
        p.b = row(act.x, g.row_begin, w_in, act.x_size);
        p.c = g.weight_grad;
        p.m = w_out, p.n = w_in, p.k = g.rows, p.lda = w_out, p.ldb = w_in, p.ldc = w_in;
        p.trans_a = 1, p.trans_b = 0, p.beta = 1.0f;
        break;
    }
    probs.push_back(p);
  }
  return probs;
}

int64_t AssignGroupedTiles(std::vector<GemmProblem>& probs) {
  int64_t tiles = 0;
  for (GemmProblem& p : probs) {
    p.tile_begin = tiles;
    tiles += ((p.m + kGroupedTileM - 1) / kGroupedTileM) * ((p.n + kGroupedTileN - 1) / kGroupedTileN);
  }
  return tiles;
}

RowChunks SplitIntoRowChunks(const std::vector<GemmProblem>& probs, int64_t rows, size_t a_size, size_t c_size) {
  RowChunks out;
  for (const GemmProblem& p : probs) {
    if (p.trans_a != 0 || p.m < rows) {
      out.rest.push_back(p);
      continue;
    }
    const int64_t chunks = p.m / rows;
    for (int64_t i = 0; i <= chunks; ++i) {
      GemmProblem c = p;
      c.m = i < chunks ? rows : p.m - chunks * rows;
      if (c.m == 0) break;
      c.a = static_cast<const char*>(p.a) + i * rows * p.lda * static_cast<int64_t>(a_size);
      c.c = static_cast<char*>(p.c) + i * rows * p.ldc * static_cast<int64_t>(c_size);
      (i < chunks ? out.full : out.rest).push_back(c);
    }
  }
  return out;
}

}  // namespace tessera::cuda_kernels
