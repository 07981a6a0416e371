#include "core/train/lm_batch.h"

#include <algorithm>

namespace tessera::train {

LmBatch MakeLmBatch(absl::Span<const data::TokenizedExample* const> examples, int64_t seq_len) {
  LmBatch b;
  b.seqs.reserve(examples.size());
  for (const data::TokenizedExample* ex : examples) {
    const int64_t n = std::min<int64_t>(seq_len, static_cast<int64_t>(ex->tokens.size()));
    b.seqs.emplace_back(ex->tokens.begin(), ex->tokens.begin() + n);
    for (int64_t i = 0; i < n; ++i) {
      int32_t t = -1;
      if (i + 1 < n && ex->loss_mask[i + 1]) t = ex->tokens[i + 1];
      b.targets.push_back(t);
      b.num_targets += t >= 0;
    }
    b.num_tokens += n;
  }
  return b;
}

}  // namespace tessera::train
