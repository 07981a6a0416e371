// IncrementalDecoder: turns generated ids into streamed text one id at a time, so that the chunks
// concatenate to exactly Decode(all generated ids) -- what a client gets from a non-streamed call and
// what transformers' decode(generated, skip_special_tokens=True) returns.
//
// Why not one DecodeToken per id: decoders are not per-token maps. A Metaspace (SentencePiece-style)
// decoder turns "▁Hello" into "Hello" at the start of a text but " Hello" after other text; byte-level
// and byte-fallback tokens may each carry part of a UTF-8 character; Strip/Fuse act on the whole text.
//
// Method (the prefix/read-offset scheme of HF text-generation-inference and vLLM): ids[prefix, read)
// were decoded and emitted as the tail of the previous window; on a new id, decode ids[prefix, end)
// and ids[prefix, read); when the longer text extends the shorter one and does not end in U+FFFD (an
// incomplete UTF-8 sequence rendered lossily) or in a truncated raw UTF-8 sequence (byte tokenizers),
// the difference is emitted and the window slides (prefix = read, read = end); otherwise the text is
// held back until a later id completes it. One more hold, which TGI/vLLM lack: while the last id is a
// byte-fallback token (<0xNN>), because `tokenizers`' ByteFallback renders a run of byte tokens as a
// whole -- "<0x29>" alone is ")", but "<0x29><0x89>" is two U+FFFD -- so a byte run is final only once
// a non-byte token ends it (special ids, which Decode skips, do not end it). Decoding a window instead of everything keeps each step
// O(window) ids. Finish() returns what is still held, computed against Decode(all ids), so the total is
// exact even when the last ids never completed a character.
// Cost: two Decode calls of a few ids per Push; memory: the ids and the emitted byte count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/tokenizer/tokenizer.h"

namespace tessera {

class IncrementalDecoder {
 public:
  // `tokenizer` must outlive this object. Decodes with Tokenizer::Decode(ids) (special ids skipped).
  explicit IncrementalDecoder(const Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}

  // Appends one generated id; returns the text it makes final (often "", e.g. for half a character).
  std::string Push(int32_t id);
  // The text not yet returned: Decode(all ids) minus everything Push returned. Call once at the end.
  std::string Finish();

  const std::vector<int32_t>& ids() const { return ids_; }

 private:
  std::string DecodeRange(size_t begin, size_t end) const;
  bool IsByteToken(int32_t id) const;

  const Tokenizer* tokenizer_;
  std::vector<int32_t> ids_;
  size_t prefix_ = 0;   // first id of the decoding window
  size_t read_ = 0;     // ids before this one have been emitted
  bool byte_run_ = false;  // the last id Decode keeps is a byte-fallback token
  std::string emitted_;  // everything Push returned (Finish checks it against the full decode)
};

}  // namespace tessera
