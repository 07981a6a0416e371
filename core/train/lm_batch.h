// LmBatch: a micro-batch of sequences prepared for next-token training.
//
// No packing and no padding: the model's forward takes a batch of variable-length sequences (the
// attention is per sequence), so each example is one sequence, truncated to `seq_len` tokens (the
// tail is dropped). Row r of the flattened batch predicts the next token of its sequence: target[r] =
// tokens[i + 1] when loss_mask[i + 1] == 1, else -1 (ignored; also for each sequence's last token).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "core/data/tokenized_example.h"

namespace tessera::train {

struct LmBatch {
  std::vector<std::vector<int32_t>> seqs;
  std::vector<int32_t> targets;  // one per token of every sequence, in order
  int64_t num_tokens = 0;        // rows
  int64_t num_targets = 0;       // targets >= 0
};

LmBatch MakeLmBatch(absl::Span<const data::TokenizedExample* const> examples, int64_t seq_len);

}  // namespace tessera::train
