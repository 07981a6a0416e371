// HfTokenizer: a Hugging Face tokenizer loaded from tokenizer.json (+ tokenizer_config.json), encoding
// and decoding exactly as the Rust `tokenizers` library does.
//
// The pipeline of `tokenizers`, one component per stage, each built from its tokenizer.json node by the
// stage's type -> factory table (core/tokenizer/hf/*_registry.cc):
//   added_tokens split out of the raw text -> normalizer per remaining piece -> added tokens matched on
//   the normalized pieces -> pre_tokenizer -> model (BPE) per piece -> post_processor when
//   add_special_tokens.
// Decode maps ids to token strings (added tokens first, special ones skipped on request) and runs the
// decoder chain (tokens joined by " " when there is none). Anything in tokenizer.json that is not
// supported (a node type, a field, BPE dropout, truncation) is refused at load by name, never encoded
// differently. bos/eos/pad come from tokenizer_config.json (-1 when absent); eos_ids() adds
// generation_config.json's eos_token_id when Create finds that file in the directory.
// Immutable after construction; safe to use from many threads (the BPE word cache is sharded and locked).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tokenizer/tokenizer.h"

namespace tessera {

namespace hf {
class AddedVocabulary;
class Decoder;
class Model;
class Normalizer;
class PostProcessor;
class PreTokenizer;
}  // namespace hf

class HfTokenizer final : public Tokenizer {
 public:
  // Reads dir/tokenizer.json and, when present, dir/tokenizer_config.json and dir/generation_config.json.
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> Create(const std::string& dir);
  // `tokenizer_config_json` may be empty (no special-token names then).
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> FromJson(std::string_view tokenizer_json,
                                                               std::string_view tokenizer_config_json);
  ~HfTokenizer() override;

  absl::StatusOr<std::vector<int32_t>> EncodeText(std::string_view text, bool add_special_tokens) const override;
  std::string Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const override;
  // Encode without special tokens; invalid UTF-8 is read with U+FFFD in place of invalid bytes.
  std::vector<int32_t> Encode(std::string_view text) const override;
  // Decode skipping special tokens.
  std::string Decode(absl::Span<const int32_t> ids) const override;
  // The decoder chain on this one token in mid-text (see hf/decoder.h); "" for special or unknown ids.
  std::string DecodeToken(int32_t id) const override;

  std::optional<int32_t> TokenToId(std::string_view token) const override;
  std::optional<std::string> IdToToken(int32_t id) const override;
  bool IsSpecialId(int32_t id) const override;
  std::vector<int32_t> eos_ids() const override { return eos_ids_; }
  std::string kind() const override { return kind_; }

  // One past the largest id of the vocabulary and the added tokens.
  int32_t vocab_size() const override { return vocab_size_; }
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }
  int32_t pad_id() const override { return pad_id_; }
  std::string name() const override { return "hf"; }

 private:
  HfTokenizer();
  // The token string decode starts from, or null.
  const std::string* TokenString(int32_t id) const;

  std::unique_ptr<hf::Normalizer> normalizer_;
  std::unique_ptr<hf::PreTokenizer> pre_tokenizer_;
  std::unique_ptr<hf::Model> model_;
  std::unique_ptr<hf::PostProcessor> post_processor_;
  std::unique_ptr<hf::Decoder> decoder_;
  std::unique_ptr<hf::AddedVocabulary> added_;
  std::string kind_;
  int32_t vocab_size_ = 0;
  int32_t bos_id_ = -1, eos_id_ = -1, pad_id_ = -1;
  std::vector<int32_t> eos_ids_;
};

}  // namespace tessera
