// Decoder: one stage of tokenizers' `decoder` tree. DecodeChain rewrites the list of token strings
// (tokenizers' decode_chain; the final text is their concatenation). StreamToken rewrites one token the
// way the chain would in the middle of a text, for streaming: stages that look at neighbours or at the
// start of the text (Fuse, Strip, Metaspace's first-token rule) leave it alone, and ByteLevel /
// ByteFallback yield raw bytes (a piece of a UTF-8 character stays a piece). CreateDecoder builds one
// from its tokenizer.json node through the type -> factory table in decoder_registry.cc.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/tokenizer/hf/node.h"

namespace tessera::hf {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void DecodeChain(std::vector<std::string>& tokens) const = 0;
  virtual void StreamToken(std::string& token) const = 0;
};

absl::StatusOr<std::unique_ptr<Decoder>> CreateDecoder(const Json& node, const std::string& where);

}  // namespace tessera::hf
