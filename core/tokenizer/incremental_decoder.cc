// IncrementalDecoder (see the header for the method and why).
#include "core/tokenizer/incremental_decoder.h"

#include <cctype>
#include <optional>
#include <string_view>

#include "absl/types/span.h"
#include "core/tokenizer/utf8.h"

namespace tessera {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Whether `text` ends in a character that later ids may still complete.
bool EndsIncomplete(std::string_view text) {
  if (text.size() >= kReplacement.size() && text.substr(text.size() - kReplacement.size()) == kReplacement) {
    return true;
  }
  return Utf8CompletePrefixLength(text) < text.size();
}

}  // namespace

std::string IncrementalDecoder::DecodeRange(size_t begin, size_t end) const {
  return tokenizer_->Decode(absl::MakeConstSpan(ids_).subspan(begin, end - begin));
}

bool IncrementalDecoder::IsByteToken(int32_t id) const {
  const std::optional<std::string> t = tokenizer_->IdToToken(id);
  return t.has_value() && t->size() == 6 && t->compare(0, 3, "<0x") == 0 && (*t)[5] == '>' &&
         std::isxdigit(static_cast<unsigned char>((*t)[3])) && std::isxdigit(static_cast<unsigned char>((*t)[4]));
}

std::string IncrementalDecoder::Push(int32_t id) {
  ids_.push_back(id);
  // Decode skips special and out-of-range ids, so they neither end nor start a byte run.
  const bool skipped = id < 0 || id >= tokenizer_->vocab_size() || tokenizer_->IsSpecialId(id);
  if (!skipped) byte_run_ = IsByteToken(id);
  if (byte_run_) return "";  // the run may still change how it renders
  const std::string prefix_text = DecodeRange(prefix_, read_);
  const std::string new_text = DecodeRange(prefix_, ids_.size());
  if (new_text.size() <= prefix_text.size() || new_text.compare(0, prefix_text.size(), prefix_text) != 0 ||
      EndsIncomplete(new_text)) {
    return "";  // nothing new yet, or held back until a later id completes it
  }
  std::string out = new_text.substr(prefix_text.size());
  prefix_ = read_;
  read_ = ids_.size();
  emitted_ += out;
  return out;
}

std::string IncrementalDecoder::Finish() {
  const std::string full = tokenizer_->Decode(ids_);
  std::string rest;
  if (full.size() >= emitted_.size() && full.compare(0, emitted_.size(), emitted_) == 0) {
    rest = full.substr(emitted_.size());
  }
  // (Otherwise the decoder is not prefix-stable on these ids and the streamed text already differs;
  // nothing can be taken back. The unit tests check that no supported decoder does this.)
  emitted_ += rest;
  prefix_ = read_ = ids_.size();
  return rest;
}

}  // namespace tessera
