// The tile lists of the tiled attention kernels (cuda_attention_tiled_kernels.cuh): host code shared by
// cuda_ops.cc and the kernel emulation test, so the test runs the kernels on the lists the backend builds.
#pragma once

#include <cstdint>
#include <vector>

#include "core/backend/cuda/cuda_kernels.h"

namespace tessera::cuda_kernels {

struct AttnSeqLengths {
  int64_t q_len = 0, kv_len = 0;
};

// tiles[0, num_q): 64-query tiles of every sequence, in order (the forward's and dq's grid);
// tiles[num_q, end): with key tiles, 64-key tiles over [0, kv_len) of every sequence that has queries (the
// dk/dv grid). covered_rows: query rows in some sequence.
struct AttnTilePlan {
  std::vector<AttnTile> tiles;
  int64_t num_q = 0;
  int64_t covered_rows = 0;
};

inline AttnTilePlan PlanAttentionTiles(const std::vector<AttnSeqLengths>& seqs, bool with_key_tiles) {
  AttnTilePlan plan;
  for (size_t s = 0; s < seqs.size(); ++s) {
    plan.covered_rows += seqs[s].q_len;
    for (int64_t o = 0; o < seqs[s].q_len; o += kAttnTileRows) {
      plan.tiles.push_back({static_cast<int32_t>(s), static_cast<int32_t>(o)});
    }
  }
  plan.num_q = static_cast<int64_t>(plan.tiles.size());
  if (with_key_tiles) {
    for (size_t s = 0; s < seqs.size(); ++s) {
      if (seqs[s].q_len == 0) continue;  // no query sees its keys
      for (int64_t o = 0; o < seqs[s].kv_len; o += kAttnTileRows) {
        plan.tiles.push_back({static_cast<int32_t>(s), static_cast<int32_t>(o)});
      }
    }
  }
  return plan;
}

}  // namespace tessera::cuda_kernels
