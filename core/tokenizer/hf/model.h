// Model: tokenizers' `model` node, turning one pre-tokenized piece into ids. CreateModel builds one from
// its tokenizer.json node through the type -> factory table in model_registry.cc (BPE today; Unigram,
// WordPiece and WordLevel are refused by name).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/tokenizer/hf/node.h"

namespace tessera::hf {

class Model {
 public:
  virtual ~Model() = default;
  // Appends the ids of `word` (non-empty, valid UTF-8) to `out`.
  virtual void Tokenize(std::string_view word, std::vector<int32_t>& out) const = 0;
  virtual std::optional<int32_t> TokenToId(std::string_view token) const = 0;
  // Null for an id outside the vocabulary.
  virtual const std::string* IdToToken(int32_t id) const = 0;
  // One past the largest id.
  virtual int32_t id_end() const = 0;
  // E.g. "BPE", "BPE (byte-fallback)".
  virtual std::string kind() const = 0;
};

absl::StatusOr<std::unique_ptr<Model>> CreateModel(const Json& node, const std::string& where);

}  // namespace tessera::hf
