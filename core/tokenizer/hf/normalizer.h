// Normalizer: one stage of tokenizers' `normalizer` tree, rewriting the text of a piece in place.
// Normalizers run on valid UTF-8 and keep it valid. CreateNormalizer builds one from its tokenizer.json
// node through the type -> factory table in normalizer_registry.cc.
#pragma once

#include <memory>
#include <string>

#include "core/tokenizer/hf/node.h"

namespace tessera::hf {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void Normalize(std::string& text) const = 0;
};

absl::StatusOr<std::unique_ptr<Normalizer>> CreateNormalizer(const Json& node, const std::string& where);

}  // namespace tessera::hf
