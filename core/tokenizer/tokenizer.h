// Tokenizer: text <-> token ids.
//
// Contract: Encode never adds special tokens (callers prepend bos_id() when the model wants one).
// Decode concatenates the byte strings of the ids and skips special and out-of-range ids; the result is
// raw bytes (a token may hold part of a UTF-8 character: see utf8.h for streaming). Implementations are
// immutable after construction and safe to share between threads.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/types/span.h"

namespace tessera {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual std::vector<int32_t> Encode(std::string_view text) const = 0;
  virtual std::string Decode(absl::Span<const int32_t> ids) const = 0;
  // The bytes one id stands for; "" for special or out-of-range ids.
  virtual std::string DecodeToken(int32_t id) const = 0;

  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  virtual int32_t pad_id() const = 0;
  virtual std::string name() const = 0;

  bool IsSpecial(int32_t id) const { return id == bos_id() || id == eos_id() || id == pad_id(); }
};

}  // namespace tessera
