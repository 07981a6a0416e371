// PostProcessor: tokenizers' `post_processor` node for one sequence with add_special_tokens (the BOS /
// EOS / CLS / SEP around the ids). CreatePostProcessor builds one from its tokenizer.json node through
// the type -> factory table in post_processor_registry.cc.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tokenizer/hf/node.h"

namespace tessera::hf {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void Process(std::vector<int32_t>& ids) const = 0;
};

absl::StatusOr<std::unique_ptr<PostProcessor>> CreatePostProcessor(const Json& node, const std::string& where);

}  // namespace tessera::hf
