// How many tokens a benchmark's greedy decoding may generate for exact match on `examples`: room for the
// longest reference completion and its EOS, plus a margin. (A fixed 24 cut longer completions, e.g.
// record_json's ~26 bytes, so they could never match.)
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/data/jsonl_dataset.h"
#include "core/data/tasks.h"
#include "core/tokenizer/tokenizer.h"

namespace tessera::bench {

inline int DecodeBudget(const std::vector<data::Example>& examples, const Tokenizer& tok) {
  int budget = 8;
  for (const data::Example& e : examples) {
    const data::TokenizedExample t = data::TokenizePromptCompletion(e.prompt, e.completion, tok);
    const int target = static_cast<int>(std::count_if(t.loss_mask.begin(), t.loss_mask.end(),
                                                      [](uint8_t m) { return m != 0; }));
    budget = std::max(budget, target + 4);
  }
  return budget;
}

}  // namespace tessera::bench
