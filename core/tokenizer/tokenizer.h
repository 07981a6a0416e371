// Tokenizer: text <-> token ids.
//
// Contract: Encode never adds special tokens (callers prepend bos_id() when the model wants one);
// EncodeText(text, add_special_tokens) is the Hugging Face `tokenizers` behaviour (the post-processor's
// BOS/EOS when add_special_tokens) and fails with INVALID_ARGUMENT on invalid UTF-8 where the tokenizer
// needs text. Decode(ids) concatenates the byte strings of the ids and skips special and out-of-range ids;
// Decode(ids, skip_special_tokens) is `tokenizers`' decode (special tokens kept unless asked). DecodeToken
// is what one id contributes to a streamed output (raw bytes; a token may hold part of a UTF-8
// character: see utf8.h). Implementations are immutable after construction and safe to share between
// threads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace tessera {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual std::vector<int32_t> Encode(std::string_view text) const = 0;
  virtual std::string Decode(absl::Span<const int32_t> ids) const = 0;
  // The bytes one id stands for when streaming; "" for special or out-of-range ids.
  virtual std::string DecodeToken(int32_t id) const = 0;

  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  virtual int32_t pad_id() const = 0;
  virtual std::string name() const = 0;

  // Default: Encode, with bos_id() first when add_special_tokens and the tokenizer has one.
  virtual absl::StatusOr<std::vector<int32_t>> EncodeText(std::string_view text, bool add_special_tokens) const {
    std::vector<int32_t> ids;
    if (add_special_tokens && bos_id() >= 0) ids.push_back(bos_id());
    std::vector<int32_t> body = Encode(text);
    ids.insert(ids.end(), body.begin(), body.end());
    return ids;
  }
  // Default: the old Decode (which always skips special ids).
  virtual std::string Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const {
    (void)skip_special_tokens;
    return Decode(ids);
  }
  virtual std::optional<int32_t> TokenToId(std::string_view token) const {
    (void)token;
    return std::nullopt;
  }
  virtual std::optional<std::string> IdToToken(int32_t id) const {
    (void)id;
    return std::nullopt;
  }
  // Whether `id` is a special token (skipped by Decode with skip_special_tokens).
  virtual bool IsSpecialId(int32_t id) const { return id >= 0 && (id == bos_id() || id == eos_id() || id == pad_id()); }
  // Every id that ends generation: eos_id() plus, for checkpoints, generation_config.json's eos_token_id.
  virtual std::vector<int32_t> eos_ids() const {
    if (eos_id() < 0) return {};
    return {eos_id()};
  }
  // Human-readable model kind, e.g. "BPE (byte-level)", "BPE (byte-fallback)", "byte".
  virtual std::string kind() const { return name(); }

  bool IsSpecial(int32_t id) const { return IsSpecialId(id); }
};

}  // namespace tessera
