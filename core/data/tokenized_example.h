// TokenizedExample: one training example as token ids plus its loss mask.
//
// loss_mask[i] == 1 marks token i as a training target (predicted from the tokens before it).
#pragma once

#include <cstdint>
#include <vector>

namespace tessera::data {

struct TokenizedExample {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> loss_mask;  // same length as tokens
  int64_t prompt_tokens = 0;       // tokens before the first target (BOS + prompt)
};

}  // namespace tessera::data
