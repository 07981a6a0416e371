// The decoder types tokenizer.json may name, each built by the factory in its own file.
#include "core/tokenizer/hf/decoder.h"

namespace tessera::hf {

using DecoderFactory = absl::StatusOr<std::unique_ptr<Decoder>>(const Json&, const std::string&);
DecoderFactory MakeByteLevelDecoder, MakeByteFallbackDecoder, MakeFuseDecoder, MakeStripDecoder, MakeMetaspaceDecoder,
    MakeReplaceDecoder, MakeSequenceDecoder;

absl::StatusOr<std::unique_ptr<Decoder>> CreateDecoder(const Json& node, const std::string& where) {
  static const FactoryEntry<Decoder> kTable[] = {
      {"ByteLevel", MakeByteLevelDecoder}, {"ByteFallback", MakeByteFallbackDecoder}, {"Fuse", MakeFuseDecoder},
      {"Strip", MakeStripDecoder},         {"Metaspace", MakeMetaspaceDecoder},       {"Replace", MakeReplaceDecoder},
      {"Sequence", MakeSequenceDecoder},
  };
  return CreateFromTable(kTable, "decoder", node, where);
}

}  // namespace tessera::hf
