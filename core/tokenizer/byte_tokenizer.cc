#include "core/tokenizer/byte_tokenizer.h"

namespace tessera {

std::vector<int32_t> ByteTokenizer::Encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (char c : text) ids.push_back(static_cast<int32_t>(static_cast<unsigned char>(c)));
  return ids;
}

std::string ByteTokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::string out;
  out.reserve(ids.size());
  for (int32_t id : ids) {
    if (id >= 0 && id < 256) out.push_back(static_cast<char>(static_cast<unsigned char>(id)));
  }
  return out;
}

std::string ByteTokenizer::DecodeToken(int32_t id) const {
  if (id < 0 || id >= 256) return std::string();
  return std::string(1, static_cast<char>(static_cast<unsigned char>(id)));
}

}  // namespace tessera
