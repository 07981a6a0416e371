// AddedVocabulary: tokenizers' added_tokens, split out of the input before anything else runs.
//
// Tokens that are special or have normalized=false are matched on the raw input; the pieces between them
// are normalized one by one, and tokens with normalized=true are then matched on those normalized
// pieces (their pattern is their content put through the normalizer). Matching is leftmost-longest and
// non-overlapping; a match is dropped when single_word is set and a word char touches it; lstrip/rstrip
// pull the whitespace before/after it into the token. Ids follow tokenizers' add_tokens: a content
// already in the model vocabulary keeps that id, others get the next id from the model's vocabulary
// size on.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "core/tokenizer/hf/model.h"
#include "core/tokenizer/hf/normalizer.h"
#include "core/tokenizer/hf/piece.h"

namespace tessera::hf {

struct AddedToken {
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

class AddedVocabulary {
 public:
  // `node` is the added_tokens array; `normalizer` may be null.
  static absl::StatusOr<std::unique_ptr<AddedVocabulary>> Create(const Json& node, const Model& model,
                                                                 const Normalizer* normalizer);

  // The pieces of `text` (valid UTF-8) after extraction and normalization.
  Pieces ExtractAndNormalize(std::string_view text, const Normalizer* normalizer) const;

  std::optional<int32_t> TokenToId(std::string_view content) const;
  // The string decode uses for an added id (the normalized form for normalized tokens), or null.
  const std::string* DecodeString(int32_t id) const;
  const AddedToken* Token(int32_t id) const;
  bool IsSpecialContent(std::string_view content) const {
    return special_contents_.contains(absl::string_view(content.data(), content.size()));
  }
  int32_t id_end() const { return id_end_; }

 private:
  // Leftmost-longest matcher over a set of patterns.
  struct Matcher {
    struct Entry {
      std::string pattern;
      int32_t id;
    };
    std::vector<std::vector<Entry>> by_first_byte = std::vector<std::vector<Entry>>(256);  // longest first
    bool empty = true;
    void Add(std::string pattern, int32_t id);
    void Finish();
  };
  // tokenizers' find_matches: the pieces of `text`, matched ones carrying their id.
  void Split(const Piece& piece, const Matcher& m, Pieces& out) const;

  absl::flat_hash_map<std::string, int32_t> by_content_;
  absl::flat_hash_map<int32_t, AddedToken> by_id_;
  absl::flat_hash_map<int32_t, std::string> normalized_form_;
  absl::flat_hash_set<std::string> special_contents_;
  Matcher raw_, normalized_;
  int32_t id_end_ = 0;
};

}  // namespace tessera::hf
